"""Reading Redis replies as the tools need them (pure): text, and flat name/value lists."""

from __future__ import annotations

from typing import Any

__all__ = ["pairs", "text"]


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pairs(flat: Any) -> dict[str, Any]:
    """A flat ``[name, value, ...]`` reply (``XINFO``, ``CONFIG GET``) by name; the values as
    replied. Anything but a list (an error, a missing key) reads as empty."""
    if not isinstance(flat, list):
        return {}
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}
