"""Punctuators: the declaration checks and the pure tick rule (``_core.punctuation``).

The property test feeds the rule clock readings in any order (event times come out of order)
with partition moves at random points (the mark falls back to what was committed, and the
events after it are seen again) and checks the calls against the model: each call is the tick
at or before the highest reading so far, the calls cover the ticks crossed without a gap or an
overlap, and a move changes nothing of what is fired after the last commit.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorstream import Record, System, Tick, Tumbling
from actorstream._core.errors import ConfigError
from actorstream._core.punctuation import PunctuatorSpec, due, tick_at_or_before


async def on_tick(tick: Tick) -> None:
    return None


@pytest.mark.parametrize(
    ("every", "clock", "message"),
    [
        (0, "stream", "actor 'a': punctuator 'p': every must be > 0 seconds, got 0"),
        (-5.0, "wall", "every must be > 0 seconds, got -5.0"),
        (math.inf, "stream", "every must be a finite number of seconds (or a timedelta)"),
        ("60", "stream", "every must be a finite number of seconds (or a timedelta), got '60'"),
        (True, "stream", "every must be a finite number of seconds"),
        (0.0005, "stream", "every must be a whole number of milliseconds, got 0.0005"),
        (60.0, "event", "time must be 'stream' (event time"),
        (60.0, "STREAM_TIME", "got 'STREAM_TIME'"),
    ],
)
def test_bad_punctuator_settings_are_refused_precisely(
    every: Any, clock: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PunctuatorSpec("a", "p", on_tick, every, clock)
    assert message in str(info.value)


def test_every_takes_a_timedelta() -> None:
    assert PunctuatorSpec("a", "p", on_tick, timedelta(minutes=1), "wall").every_ms == 60_000


class Ev(Record):
    k: str


def _system() -> tuple[System, Any]:
    system = System("punct", install_signal_handlers=False)
    return system, system.stream("evs", record=Ev, partitions=2, key="k")


def test_declared_on_the_handler_or_the_name() -> None:
    system, evs = _system()
    counts = system.table("counts", value=int, default=0)

    @system.actor(evs, tables=[counts])
    async def tally(ev: Ev) -> None: ...

    @system.punctuate(tally, every=60.0)
    async def flush(tick: Tick) -> None: ...

    @system.punctuate("tally", every=5.0, time="wall", name="heartbeat")
    async def beat(tick: Tick) -> None: ...

    spec = system.actors["tally"]
    assert [(p.name, p.every, p.clock) for p in spec.punctuators] == [
        ("flush", 60.0, "stream"), ("heartbeat", 5.0, "wall"),
    ]
    assert spec.stateful


def test_a_stateless_actor_becomes_stateful_with_a_punctuator() -> None:
    system, evs = _system()

    @system.actor(evs)
    async def plain(ev: Ev) -> None: ...

    assert not system.actors["plain"].stateful

    @system.punctuate(plain, every=1.0, time="wall")
    async def beat(tick: Tick) -> None: ...

    assert system.actors["plain"].stateful  # its progress mark is committed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"iterator": True}, "actor 'a': punctuators need the event form (one event per "
                             "handler call), not the iterator form"),
        ({"batch": True}, "actor 'a': punctuators need the event form (one event per handler "
                          "call), not the batch form"),
        ({"ordering": "key"}, "actor 'a': punctuators need ordering='partition' (got 'key')"),
        ({"ordering": "none", "concurrency": 4},
         "actor 'a': punctuators need ordering='partition' (got 'none')"),
    ],
)
def test_actors_a_tick_cannot_run_between_events_of_are_refused(
    options: dict[str, Any], message: str
) -> None:
    system, evs = _system()

    async def handler(ev: Any) -> None: ...

    system.actor(evs, name="a", **options)(handler)
    with pytest.raises(ConfigError) as info:
        system.punctuate("a", every=1.0)(on_tick)
    assert message in str(info.value)


def test_bad_targets_and_callbacks_are_refused_precisely() -> None:
    system, evs = _system()

    @system.actor(evs)
    async def a(ev: Ev) -> None: ...

    with pytest.raises(ConfigError, match=r"pass an actor .* not the stream 'evs'"):
        system.punctuate(evs, every=1.0)
    with pytest.raises(ConfigError, match="'nobody' is not an actor of system 'punct'"):
        system.punctuate("nobody", every=1.0)

    async def stray(ev: Ev) -> None: ...

    with pytest.raises(ConfigError, match="'stray' is not an actor of system 'punct'"):
        system.punctuate(stray, every=1.0)

    def sync(tick: Tick) -> None: ...

    with pytest.raises(ConfigError, match="actor 'a': punctuator 'sync' must be an `async def`"):
        system.punctuate(a, every=1.0)(sync)

    async def two(tick: Tick, other: int) -> None: ...

    with pytest.raises(ConfigError, match=r"punctuator 'two': two\(\) must take one argument"):
        system.punctuate(a, every=1.0)(two)
    with pytest.raises(ConfigError, match="actor 'a': punctuator name '_x' is not valid"):
        system.punctuate(a, every=1.0, name="_x")(on_tick)
    with pytest.raises(ConfigError, match="actor 'a': punctuator 'p': every must be > 0"):
        system.punctuate(a, every=0, name="p")(on_tick)
    system.punctuate(a, every=1.0, name="p")(on_tick)
    with pytest.raises(ConfigError, match="punctuator 'p' is already declared"):
        system.punctuate(a, every=2.0, name="p")(on_tick)


def test_a_windowed_actor_takes_punctuators() -> None:
    system, evs = _system()
    per_minute = system.table("pm", value=int, default=0, window=Tumbling(60.0))

    @system.actor(evs, tables=[per_minute], processing="exactly_once")
    async def w(ev: Ev) -> None: ...

    system.punctuate(w, every=60.0)(on_tick)
    assert system.actors["w"].punctuators


# ---- the rule -----------------------------------------------------------------------------


def test_the_first_reading_sets_the_mark_and_fires_nothing() -> None:
    assert due(None, 61_500, 60_000) == (60_000, None)
    assert due(60_000, 119_999, 60_000) == (None, None)
    assert due(60_000, 120_000, 60_000) == (120_000, 120_000)
    assert due(60_000, 400_000, 60_000) == (360_000, 360_000)  # once for five ticks
    assert due(360_000, 10, 60_000) == (None, None)  # an earlier time moves nothing


def test_a_tick_says_what_it_covers() -> None:
    spec = PunctuatorSpec("a", "p", on_tick, 60.0, "stream")
    tick = spec.tick(360_000, 60_000, 3)
    assert (tick.time, tick.previous, tick.partition, tick.clock) == (360.0, 60.0, 3, "stream")
    assert tick.missed == 4
    assert spec.tick(120_000, 60_000, 0).missed == 0


def _run(readings: list[int], every: int, mark: int | None) -> tuple[int | None, list[Any]]:
    fired: list[tuple[int, int]] = []
    for t in readings:
        new, fire = due(mark, t, every)
        if fire is not None:
            assert mark is not None
            fired.append((mark, fire))
        if new is not None:
            mark = new
    return mark, fired


@settings(max_examples=300, deadline=None)
@given(
    every=st.integers(1, 50),
    readings=st.lists(st.integers(0, 2_000), min_size=1, max_size=60),
    moves=st.lists(st.integers(0, 60), max_size=4),
)
def test_ticks_cover_the_crossed_ones_once_through_moves(
    every: int, readings: list[int], moves: list[int]
) -> None:
    mark, fired = _run(readings, every, None)
    # the model: the mark is the tick at or before the highest reading
    assert mark == tick_at_or_before(max(readings), every)
    first = tick_at_or_before(readings[0], every)
    bounds = [first] + [f for _p, f in fired]
    assert [p for p, _f in fired] == bounds[:-1]  # each call starts where the last ended
    assert all(p < f and f % every == 0 for p, f in fired)
    for p, f in fired:  # fired by the first reading that reached it
        at = next(i for i, t in enumerate(readings) if t >= f)
        assert max(readings[:at], default=readings[0]) < f or f == first
        assert p < f
    # a move: the mark committed at a point, then the readings after it seen again
    committed_at = 0
    mark2: int | None = None
    fired2: list[tuple[int, int]] = []
    for cut in sorted(m % (len(readings) + 1) for m in moves):
        mark2, more = _run(readings[committed_at:cut], every, mark2)
        fired2 += more
        committed_at = cut
    mark2, more = _run(readings[committed_at:], every, mark2)
    assert (mark2, fired2 + more) == (mark, fired)
