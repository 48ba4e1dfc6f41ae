"""The Lua scripts of the tree (leases, fencing, claims, dead letters), loaded once per process.

The ``.lua`` files live in ``actorstream/_lua/`` (the dead-letter admin API loads its own there).
"""

from __future__ import annotations

from pathlib import Path

from .._transport import Script

_DIR = Path(__file__).parent.parent / "_lua"


def _load(name: str) -> Script:
    return Script((_DIR / f"{name}.lua").read_text(), name=name)


CLAIM = _load("claim")
DEADLETTER = _load("deadletter")
ACQUIRE = _load("acquire")
RENEW = _load("renew")
RELEASE = _load("release")
HEARTBEAT = _load("heartbeat")
ENSURE_GROUP = _load("ensure_group")
TRIM = _load("trim")
DLQ_TRIM = _load("dlq_trim")
DLQ_SWEEP = _load("dlq_sweep")
FORWARD = _load("forward")
