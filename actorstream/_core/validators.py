"""attrs validators for the core's frozen settings: a ``ConfigError`` (not attrs' ``TypeError``)
naming the class, the field, what it must be and what it got."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from .errors import ConfigError

__all__ = ["Validator", "number"]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def number(requirement: str, ok: Callable[[float], bool], *, integer: bool = False) -> Validator:
    """A number (never a bool, never NaN) for which ``ok`` holds; ``requirement`` says which."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        where = f"{type(instance).__name__}.{attribute.name}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if integer and not isinstance(value, int):
            raise ConfigError(f"{where} must be an int, got {value!r}")
        if math.isnan(value) or not ok(value):
            raise ConfigError(f"{where} must be {requirement}, got {value!r}")

    return validate
