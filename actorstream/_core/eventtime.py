"""Event time: an event's time in epoch milliseconds, from a number, a datetime, text, or the
timestamp of its Redis entry id (``windows`` holds the rules that use it)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from .errors import DecodeError

__all__ = ["entry_id_millis", "event_time_millis"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_time_millis(value: object, where: str) -> int:
    """An event time (epoch seconds as int/float, or a datetime) in milliseconds.

    Text (the fields of a dict stream) is read as epoch seconds or an ISO 8601 datetime. A
    naive datetime is taken as UTC, so that every worker reads it the same whatever its
    local time zone. A value that is no time raises DecodeError (the event is poison).
    """
    if type(value) is float and value - value == 0.0:  # finite: the common case first
        return round(value * 1000)
    if isinstance(value, bytes | str):
        value = _parse_time(value.decode() if isinstance(value, bytes) else value, where)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        micros = (aware - _EPOCH) // timedelta(microseconds=1)
        return (micros + 500) // 1000
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(
            f"{where}: event time must be epoch seconds (a number) or a datetime, "
            f"got {type(value).__name__} {value!r:.80}",
            kind="time",
        )
    if not math.isfinite(value):
        raise DecodeError(f"{where}: event time must be finite, got {value!r}", kind="time")
    return round(value * 1000)


def _parse_time(text: str, where: str) -> float | datetime:
    """A dict stream's text: epoch seconds, or an ISO 8601 datetime."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(
            f"{where}: event time must be epoch seconds or an ISO 8601 datetime, "
            f"got {text!r:.80}",
            kind="time",
        ) from None


def entry_id_millis(entry_id: str | bytes) -> int:
    """The millisecond timestamp Redis put in an entry id (``"1700000000000-0"``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])
