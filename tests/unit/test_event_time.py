"""Event time on streams: declared at the stream, checked at declaration, read per event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from actorstream import ConfigError, DecodeError, Record, System


class Tick(Record):
    name: str
    ts: float


class Stamped(Record):
    at: datetime
    when: int
    label: str
    maybe: float | None = None


def system() -> System:
    return System("unit", "redis://127.0.0.1:1/0")


def test_a_time_field_a_function_or_the_entry_id() -> None:
    s = system()
    by_field = s.stream("ticks", record=Tick, time="ts")
    assert by_field.event_time_ms(Tick(name="a", ts=61.5), "1-0") == 61_500
    aware = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    by_datetime = s.stream("stamped", record=Stamped, time="at")
    event = Stamped(at=aware, when=3, label="x")
    assert by_datetime.event_time_ms(event, "1-0") == int(aware.timestamp()) * 1000
    assert s.stream("when", record=Stamped, time="when").event_time_ms(event, "1-0") == 3000
    by_function = s.stream("fn", record=Tick, time=lambda tick: tick.ts * 2)
    assert by_function.event_time_ms(Tick(name="a", ts=1.0), "1-0") == 2000
    by_id = s.stream("ids", record=Tick)
    assert by_id.time is None
    assert by_id.event_time_ms(Tick(name="a", ts=1.0), "1700000000123-4") == 1_700_000_000_123
    dicts = s.stream("raw", time="t")
    assert dicts.event_time_ms({"t": 2}, "1-0") == 2000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"record": Tick, "time": "when"},
            "stream 's': time field 'when' is not a field of Tick (fields: name, ts)",
        ),
        (
            {"record": Stamped, "time": "label"},
            "stream 's': time field Stamped.label must hold epoch seconds (float or int) or a "
            "datetime, but is declared as str",
        ),
        (
            {"record": Stamped, "time": "maybe"},
            "time field Stamped.maybe must hold epoch seconds (float or int) or a datetime, "
            "but is declared as float | None",
        ),
        (
            {"record": Tick, "time": 3},
            "stream 's': time must be a field name, a callable of the event or None",
        ),
    ],
)
def test_a_bad_time_declaration_is_rejected_precisely(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        system().stream("s", **kwargs)
    assert message in str(info.value)


def test_an_event_without_a_usable_time_is_poison() -> None:
    s = system()
    dicts = s.stream("raw", time="t")
    for bad in ({"u": 1}, {"t": "soon"}, {"t": float("nan")}, {"t": True}):
        with pytest.raises(DecodeError, match="stream 'raw': time 't'") as info:
            dicts.event_time_ms(bad, "1-0")
        assert info.value.kind == "time"
    broken = s.stream("fn", time=lambda e: e["missing"])
    with pytest.raises(DecodeError, match="stream 'fn': time <function") as info:
        broken.event_time_ms({}, "1-0")
