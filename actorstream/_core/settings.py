"""Worker-wide settings: a frozen, validated value every branch of the tree reads."""

from __future__ import annotations

from typing import Any

import attrs
from attrs import frozen

from .errors import ConfigError
from .leasetiming import LeaseTiming
from .policy import RestartPolicy

__all__ = ["Settings"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive number, got {value!r}")


def _port_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(f"{attribute.name} must be a TCP port 0..65535 or None, got {value!r}")


@frozen
class Settings:
    """Worker-wide settings; everything has a default and is validated here."""

    lease_timing: LeaseTiming = attrs.field(factory=LeaseTiming)
    restart_policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    shutdown_grace: float = attrs.field(default=30.0, validator=_positive)
    max_connections: int = attrs.field(default=32, validator=_positive)
    telemetry_interval: float = attrs.field(default=1.0, validator=_positive)
    dead_letter_maxlen: int = attrs.field(default=0)
    install_signal_handlers: bool = True
    #: Serve /metrics, /healthz and /readyz on this port (0: any free port); None: do not.
    metrics_port: int | None = attrs.field(default=None, validator=_port_or_none)
    metrics_host: str = "0.0.0.0"
