"""The pure window arithmetic: declarations, assignment, stream time, lateness, closing.

The property tests run the tracker against a brute-force model that remembers everything
(every closed window forever, every window by scanning), with a table of counts kept beside it
the way a windowed table keeps its values, and a partition move (rebuild from what is stored)
at random points.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorstream._core.errors import ConfigError, DecodeError
from actorstream._core.windows import (
    Closing,
    Hopping,
    Session,
    Step,
    Tumbling,
    Window,
    WindowSpec,
    WindowTracker,
    check_spec,
    entry_id_millis,
    event_time_millis,
)

# ---- declarations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Tumbling(0), "Tumbling.size must be at least 0.001 (one millisecond), got 0"),
        (lambda: Tumbling(-60.0), "Tumbling.size must be at least 0.001 (one millisecond)"),
        (lambda: Tumbling(math.inf), "Tumbling.size must be a finite number of seconds, got inf"),
        (lambda: Tumbling(math.nan), "Tumbling.size must be a finite number of seconds, got nan"),
        (lambda: Tumbling("60"), "Tumbling.size must be a number of seconds (or a timedelta)"),
        (lambda: Tumbling(True), "Tumbling.size must be a number of seconds (or a timedelta)"),
        (lambda: Tumbling(0.0005), "Tumbling.size must be a whole number of milliseconds"),
        (lambda: Tumbling(60, grace=-1), "Tumbling.grace must be >= 0, got -1"),
        (lambda: Hopping(60, 0), "Hopping.step must be at least 0.001 (one millisecond), got 0"),
        (lambda: Hopping(60, 90), "Hopping.step (90) must be <= size (60)"),
        (lambda: Hopping(60, 10, grace=math.inf), "Hopping.grace must be a finite number"),
        (lambda: Session(0), "Session.gap must be at least 0.001 (one millisecond), got 0"),
        (lambda: Session(30, grace=-0.5), "Session.grace must be >= 0, got -0.5"),
    ],
)
def test_bad_declarations_are_rejected_precisely(build: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


def test_declarations_accept_timedeltas_and_are_values() -> None:
    assert Tumbling(timedelta(minutes=1), grace=timedelta(seconds=5)) == Tumbling(60.0, 5.0)
    assert Hopping(60, 60) == Hopping(60.0, 60.0, grace=0)  # a step of size is tumbling
    assert hash(Session(1.5)) == hash(Session(1.5, grace=0.0))
    assert check_spec(Session(1), "table 't'") == Session(1)
    with pytest.raises(ConfigError, match=r"table 't': window must be Tumbling\(size, grace=\)"):
        check_spec(60, "table 't'")


# ---- assignment ----------------------------------------------------------------------------


def test_tumbling_edges() -> None:
    spec = Tumbling(60.0, grace=5.0)
    assert spec.windows_for(0) == (Window(0, 60_000),)
    assert spec.windows_for(59_999) == (Window(0, 60_000),)
    assert spec.windows_for(60_000) == (Window(60_000, 120_000),)  # half-open: end is out
    assert spec.windows_for(-1) == (Window(-60_000, 0),)  # before 1970 aligns too
    (w,) = spec.windows_for(61_500)
    assert (w.start, w.end) == (60.0, 120.0)
    assert repr(w) == "Window(start=60.0, end=120.0)"
    assert Window.from_token(w.token()) == w
    assert Window.from_token(Window(-5, 3).token()) == Window(-5, 3)


def test_hopping_edges() -> None:
    spec = Hopping(60, 20)
    assert spec.windows_for(0) == (
        Window(-40_000, 20_000),
        Window(-20_000, 40_000),
        Window(0, 60_000),
    )
    assert spec.windows_for(59_999) == (
        Window(0, 60_000),
        Window(20_000, 80_000),
        Window(40_000, 100_000),
    )
    assert len(Hopping(60, 25).windows_for(5_000)) == 3  # size not a multiple of the step
    assert len(Hopping(60, 25).windows_for(60_000)) == 2


@given(
    size=st.integers(1, 100),
    data=st.data(),
    t=st.integers(-10_000, 10_000),
)
def test_hopping_assignment_matches_a_scan(size: int, data: st.DataObject, t: int) -> None:
    step = data.draw(st.integers(1, size))
    spec = Hopping(size / 1000, step / 1000)
    expected = [
        Window(k * step, k * step + size)
        for k in range(t // step - size - 2, t // step + 2)
        if k * step <= t < k * step + size
    ]
    assert list(spec.windows_for(t)) == expected
    if step == size:
        assert spec.windows_for(t) == Tumbling(size / 1000).windows_for(t)


# ---- event time ----------------------------------------------------------------------------


def test_event_time_from_numbers_datetimes_and_entry_ids() -> None:
    assert event_time_millis(1_700_000_000, "s") == 1_700_000_000_000
    assert event_time_millis(1.0005, "s") in (1000, 1001)  # nearest millisecond
    assert event_time_millis(0.3, "s") == 300
    aware = datetime(2026, 12, 1, 23, 0, 0, 123_456, tzinfo=UTC)
    assert event_time_millis(aware, "s") == 1_796_166_000_123
    assert event_time_millis(aware.replace(tzinfo=None), "s") == 1_796_166_000_123  # naive: UTC
    paris = aware.astimezone(timezone(timedelta(hours=1)))
    assert event_time_millis(paris, "s") == 1_796_166_000_123
    assert entry_id_millis("1700000000000-7") == 1_700_000_000_000
    assert entry_id_millis(b"5-0") == 5


def test_text_event_times_are_parsed() -> None:
    assert event_time_millis(b"61.5", "s") == 61_500
    assert event_time_millis("1970-01-01T00:01:00+00:00", "s") == 60_000
    assert event_time_millis("1970-01-01T00:01:00", "s") == 60_000


@pytest.mark.parametrize("value", [True, "soon", b"nan", None, math.nan, math.inf, [1]])
def test_a_bad_event_time_is_poison(value: object) -> None:
    with pytest.raises(DecodeError, match="stream 'orders'") as info:
        event_time_millis(value, "stream 'orders'")
    assert info.value.kind == "time"


# ---- tracking: edges -------------------------------------------------------------------------


def test_stream_time_is_the_highest_event_time_and_closes_at_end_plus_grace() -> None:
    tr = WindowTracker(Tumbling(60, grace=5))
    assert tr.stream_time_ms is None
    s = tr.on_event("a", 10_000)
    assert s == Step((), s.placement, ()) and s.placement.windows == (Window(0, 60_000),)
    tr.on_event("b", 64_999)  # within grace: [0, 60) still open
    assert tr.stream_time_ms == 64_999
    late_ok = tr.on_event("a", 59_000)  # behind stream time but not late
    assert late_ok.placement.windows == (Window(0, 60_000),) and not late_ok.placement.late
    assert tr.stream_time_ms == 64_999  # never goes back
    s = tr.on_event("c", 65_000)  # reaches end + grace: closes both keys' window
    assert {c.key for c in s.closed} == {"a"}
    assert s.closed == s.expired  # retention 0: leaves at once
    late = tr.on_event("a", 1_000)
    assert late.placement.late and late.placement.windows == ()
    assert late.placement.missed == (Window(0, 60_000),)
    assert tr.open_windows("a") == [] and tr.open_windows("b") == [Window(60_000, 120_000)]


def test_retention_keeps_closed_windows_then_expires_them() -> None:
    tr = WindowTracker(Tumbling(10), retention=20)
    tr.on_event("k", 0)
    closed, expired = tr.advance(10_000)
    assert closed == (Closing("k", Window(0, 10_000)),) and expired == ()
    assert tr.closed_windows("k") == [Window(0, 10_000)]
    assert tr.advance(29_999) == ((), ())
    assert tr.advance(30_000) == ((), (Closing("k", Window(0, 10_000)),))
    assert tr.closed_windows("k") == []


def test_a_late_event_that_bridges_two_sessions_merges_them() -> None:
    tr = WindowTracker(Session(10, grace=100))
    assert tr.on_event("u", 0).placement.windows == (Window(0, 10_000),)
    assert tr.on_event("u", 30_000).placement.windows == (Window(30_000, 40_000),)
    bridge = tr.on_event("u", 15_000).placement  # overlaps neither: a third session
    assert bridge.windows == (Window(15_000, 25_000),) and bridge.merged == ()
    glue = tr.on_event("u", 24_000).placement  # overlaps [15, 25) and [30, 40): merges them
    assert glue.windows == (Window(15_000, 40_000),)
    assert glue.merged == (Window(15_000, 25_000), Window(30_000, 40_000))
    assert tr.open_windows("u") == [Window(0, 10_000), Window(15_000, 40_000)]
    inside = tr.on_event("u", 16_000).placement  # inside an open session: nothing changes
    assert inside.windows == (Window(15_000, 40_000),) and inside.merged == ()
    assert tr.on_event("u", 10_000).placement.windows == (Window(10_000, 40_000),)


def test_events_exactly_gap_apart_are_two_sessions() -> None:
    tr = WindowTracker(Session(10))
    tr.on_event("u", 0)
    assert tr.on_event("u", 10_000).placement.merged == ()
    assert tr.open_windows("u") == [Window(10_000, 20_000)]  # [0, 10) closed at 10


def test_an_event_joining_a_closed_session_is_late() -> None:
    tr = WindowTracker(Session(10, grace=0))
    tr.on_event("u", 0)
    step = tr.on_event("v", 12_000)  # closes u's [0, 10)
    assert step.closed == (Closing("u", Window(0, 10_000)),) and step.expired == ()
    joins = tr.on_event("u", 5_000).placement  # its own [5, 15) is still open, but it
    assert joins.late and joins.missed == (Window(0, 10_000),)  # would extend an emitted one
    tr.advance(20_000)  # the closed session is remembered for one gap after closing
    assert tr.closed_windows("u") == []
    assert tr.on_event("u", 9_999).placement.missed == (Window(9_999, 19_999),)


def test_restore_rebuilds_open_and_retained_windows() -> None:
    tr = WindowTracker(Tumbling(10), retention=5, stream_time_ms=24_000)
    assert not tr.restore("k", Window(0, 10_000))  # retention over: delete it
    assert tr.restore("k", Window(10_000, 20_000))  # closed, retained
    assert tr.restore("k", Window(20_000, 30_000))  # open
    assert tr.closed_windows("k") == [Window(10_000, 20_000)]
    assert tr.open_windows("k") == [Window(20_000, 30_000)] and len(tr) == 1
    closed, expired = tr.advance(30_000)
    assert closed == (Closing("k", Window(20_000, 30_000)),)
    assert expired == (Closing("k", Window(10_000, 20_000)),)


def test_a_plan_changes_nothing_until_applied() -> None:
    tr = WindowTracker(Session(10, grace=100))
    tr.on_event("u", 0)
    tr.on_event("u", 30_000)
    plan = tr.plan("u", 12_000)  # would bridge [0, 10) and [30, 40)? no: [12, 22) alone
    assert plan.windows == (Window(12_000, 22_000),) and tr.open_windows("u") == [
        Window(0, 10_000),
        Window(30_000, 40_000),
    ]
    bridge = tr.plan("u", 5_000)  # [5, 15) overlaps [0, 10) only
    assert bridge.merged == (Window(0, 10_000),) and len(tr) == 2  # a failed handler: as was
    tr.apply("u", bridge)
    assert tr.open_windows("u") == [Window(0, 15_000), Window(30_000, 40_000)]


def test_stream_time_is_saved_only_when_it_could_decide() -> None:
    tumbling = WindowTracker(Tumbling(60, grace=5))
    assert tumbling.decides_between(None, 1)
    assert tumbling.decides_between(1_000, 6_000)  # [-60, 0) closes at 5
    assert not tumbling.decides_between(6_000, 64_999)  # no window closes in between
    assert tumbling.decides_between(1_000, 65_000)  # [0, 60) closes at 65
    assert not tumbling.decides_between(65_000, 124_999)
    assert not tumbling.decides_between(70_000, 70_000)
    retained = WindowTracker(Tumbling(60, grace=5), retention=10)
    assert retained.decides_between(66_000, 75_000)  # [0, 60) leaves at 75
    assert WindowTracker(Session(10)).decides_between(1, 2)


@given(
    size=st.integers(1, 90_000),
    data=st.data(),
    grace=st.integers(0, 10_000),
    retention=st.integers(0, 30_000),
    old=st.integers(0, 10**6),
    later=st.integers(0, 200_000),
)
def test_next_decision_is_the_first_stream_time_that_decides(
    size: int, data: st.DataObject, grace: int, retention: int, old: int, later: int
) -> None:
    step = data.draw(st.integers(1, size))
    kind = data.draw(st.sampled_from(["time", "session"]))
    spec: WindowSpec = (
        Session(size / 1000, grace=grace / 1000) if kind == "session"
        else Hopping(size / 1000, step / 1000, grace=grace / 1000)
    )
    tracker = WindowTracker(spec, retention=retention / 1000)
    new = old + later
    assert tracker.decides_between(old, new) == (new >= tracker.next_decision(old))
    assert tracker.decides_between(None, new) and new >= tracker.next_decision(None)


# ---- tracking against a model ----------------------------------------------------------------


class Table:
    """What a windowed table of counts does with the tracker's steps."""

    def __init__(self, spec: WindowSpec, retention: float) -> None:
        self.spec, self.retention = spec, retention
        self.tracker = WindowTracker(spec, retention=retention)
        self.values: dict[tuple[Hashable, Window], int] = {}
        self.emitted: list[tuple[Hashable, Window, int]] = []
        self.saved: int | None = None  # the stream time stored (only when it decides)

    def apply(self, closed: tuple[Closing, ...], expired: tuple[Closing, ...]) -> None:
        st = self.tracker.stream_time_ms
        if st is not None and self.tracker.decides_between(self.saved, st):
            self.saved = st
        for c in closed:
            self.emitted.append((c.key, c.window, self.values[c.key, c.window]))
        for c in expired:
            del self.values[c.key, c.window]

    def event(self, key: Hashable, t: int) -> bool:
        step = self.tracker.on_event(key, t)
        self.apply(step.closed, step.expired)
        p = step.placement
        if p.merged:
            self.values[key, p.windows[0]] = sum(self.values.pop((key, w)) for w in p.merged)
        for w in p.windows:
            self.values[key, w] = self.values.get((key, w), 0) + 1
        return p.late

    def move(self) -> None:
        """The partition moves: a new tracker from what is stored (stream time and windows)."""
        tracker = WindowTracker(self.spec, retention=self.retention, stream_time_ms=self.saved)
        for key, window in list(self.values):
            if not tracker.restore(key, window):
                del self.values[key, window]
        self.tracker = tracker


class SessionModel:
    def __init__(self, gap: int, grace: int) -> None:
        self.gap, self.grace = gap, grace
        self.st: int | None = None
        self.open: dict[Hashable, list[tuple[int, int, int]]] = {}
        self.closed: dict[Hashable, list[tuple[int, int]]] = {}
        self.emitted: list[tuple[Hashable, Window, int]] = []

    def advance(self, t: int) -> None:
        self.st = t if self.st is None else max(self.st, t)
        for key, sessions in self.open.items():
            for s in [s for s in sessions if s[1] + self.grace <= self.st]:
                sessions.remove(s)
                self.closed.setdefault(key, []).append(s[:2])
                self.emitted.append((key, Window(s[0], s[1]), s[2]))

    def event(self, key: Hashable, t: int) -> bool:
        self.advance(t)
        assert self.st is not None
        start, end, count = t, t + self.gap, 1
        if end + self.grace <= self.st:
            return True
        if any(a < end and start < b for a, b in self.closed.get(key, [])):
            return True
        sessions = self.open.setdefault(key, [])
        changed = True
        while changed:
            changed = False
            for s in list(sessions):
                if s[0] < end and start < s[1]:
                    sessions.remove(s)
                    start, end, count = min(start, s[0]), max(end, s[1]), count + s[2]
                    changed = True
        sessions.append((start, end, count))
        return False


class TimeWindowModel:
    def __init__(self, size: int, step: int, grace: int) -> None:
        self.size, self.step, self.grace = size, step, grace
        self.st: int | None = None
        self.counts: dict[tuple[Hashable, int], int] = {}
        self.emitted: list[tuple[Hashable, Window, int]] = []

    def advance(self, t: int) -> None:
        self.st = t if self.st is None else max(self.st, t)
        for (key, start), n in list(self.counts.items()):
            if start + self.size + self.grace <= self.st:
                del self.counts[key, start]
                self.emitted.append((key, Window(start, start + self.size), n))

    def event(self, key: Hashable, t: int) -> bool:
        self.advance(t)
        assert self.st is not None
        late = False
        for start in range(t - self.size - self.step, t + 1):
            if start % self.step or not start <= t < start + self.size:
                continue
            if start + self.size + self.grace <= self.st:
                late = True
            else:
                self.counts[key, start] = self.counts.get((key, start), 0) + 1
        return late


def _emitted(items: list[tuple[Hashable, Window, int]]) -> list[tuple[str, int, int, int]]:
    return sorted((str(k), w.start_ms, w.end_ms, n) for k, w, n in items)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.sampled_from(["a", "b", 3]), st.integers(0, 300)),
        st.tuples(st.just("event"), st.sampled_from(["a", "b", 3]), st.integers(0, 300)),
        st.tuples(st.just("advance"), st.just(None), st.integers(0, 350)),
        st.tuples(st.just("move"), st.just(None), st.just(0)),
    ),
    min_size=10,
    max_size=80,
)


def _run(table: Table, model: SessionModel | TimeWindowModel, ops: list[Any]) -> None:
    for op, key, t in ops:
        if op == "event":
            assert table.event(key, t) == model.event(key, t), (key, t)
        elif op == "advance":
            table.apply(*table.tracker.advance(t))
            model.advance(t)
        else:
            table.move()
        assert _emitted(table.emitted) == _emitted(model.emitted)
    table.apply(*table.tracker.advance(10**9))  # the end of time: everything closes
    model.advance(10**9)
    assert _emitted(table.emitted) == _emitted(model.emitted)
    assert table.values == {}  # and leaves the table
    seen = [(k, w) for k, w, _ in table.emitted]
    assert len(seen) == len(set(seen))  # each (key, window) emitted once


@settings(max_examples=300)
@given(
    gap=st.integers(1, 60),
    grace=st.integers(0, 60),
    retention=st.integers(0, 80),
    ops=operations,
)
def test_sessions_match_the_model(gap: int, grace: int, retention: int, ops: list[Any]) -> None:
    table = Table(Session(gap / 1000, grace=grace / 1000), retention / 1000)
    _run(table, SessionModel(gap, grace), ops)
    for key in {k for k, _, _ in table.emitted}:  # a key's emitted sessions never overlap
        windows = sorted(w for k, w, _ in table.emitted if k == key)
        assert all(a.end_ms <= b.start_ms for a, b in itertools.pairwise(windows))


@settings(max_examples=300)
@given(
    size=st.integers(1, 60),
    data=st.data(),
    grace=st.integers(0, 60),
    retention=st.integers(0, 80),
    ops=operations,
)
def test_hopping_and_tumbling_match_the_model(
    size: int, data: st.DataObject, grace: int, retention: int, ops: list[Any]
) -> None:
    step = data.draw(st.integers(1, size))
    spec: WindowSpec = (
        Tumbling(size / 1000, grace=grace / 1000)
        if step == size
        else Hopping(size / 1000, step / 1000, grace=grace / 1000)
    )
    _run(Table(spec, retention / 1000), TimeWindowModel(size, step, grace), ops)
