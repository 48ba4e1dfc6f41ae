"""The Lua scripts, kept as .lua files beside the code and loaded once per process."""

from __future__ import annotations

from pathlib import Path

from ._transport import Script

_DIR = Path(__file__).parent / "_lua"


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
