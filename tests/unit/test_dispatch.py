"""The dispatch rule (``_core.dispatch``) without Redis: examples, then a Hypothesis model.

The model drives a ``Dispatch`` with random arrivals, takes and starts, finishes (acking some,
all or none of a unit), failures and outages, and checks after every step: never two units
holding one key in flight, a key's entries start in stream order, nothing offered for acking
before its unit finished (and only what the caller named), in-flight and read-ahead bounded.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actorstream import Record, System
from actorstream._core.dispatch import Dispatch, Held, Ordering, Start, lane_key
from actorstream._tree.lanes import _lane_getter


def ids(units: list[Held] | Start | None) -> list[bytes]:
    assert units is not None
    entries = units.entries if isinstance(units, Start) else units
    return [held[0] for held in entries]


def arrive_all(d: Dispatch, keys: list[Any]) -> None:
    for i, key in enumerate(keys, 1):
        d.arrive(f"{i}-0".encode(), key)


# -- examples ----------------------------------------------------------------------------------


def test_key_ordering_runs_keys_concurrently_and_a_key_in_order() -> None:
    d = Dispatch(Ordering.KEY, concurrency=8)
    arrive_all(d, ["a", "b", "a", "c"])
    first = d.take(10)
    assert ids(first) == [b"1-0", b"2-0", b"4-0"]  # 3-0 waits behind 1-0 (key a)
    assert d.take(10) == []
    assert d.in_flight == 3 and d.held == 4 and d.waiting == 1
    assert d.done(first[0]) == b"1-0"
    assert ids(d.take(10)) == [b"3-0"]


def test_take_stops_at_the_limit_and_at_concurrency() -> None:
    d = Dispatch(Ordering.KEY, concurrency=3)
    arrive_all(d, ["a", "b", "c", "d", "e"])
    assert ids(d.take(2)) == [b"1-0", b"2-0"]
    assert ids(d.take(10)) == [b"3-0"]
    assert d.take(10) == [] and not d.startable()


def test_partition_ordering_is_one_lane() -> None:
    d = Dispatch(Ordering.PARTITION, concurrency=1)
    arrive_all(d, ["a", "b"])
    (one,) = d.take(10)
    assert one[0] == b"1-0" and d.take(10) == []
    assert d.done(one, ack=False) is None  # dead-lettered: the move acked it
    assert ids(d.take(10)) == [b"2-0"]


def test_none_ordering_ignores_keys_up_to_concurrency() -> None:
    d = Dispatch(Ordering.NONE, concurrency=2)
    arrive_all(d, ["a", "a", "a"])
    assert ids(d.take(10)) == [b"1-0", b"2-0"]
    assert d.take(10) == [] and not d.startable()


def test_a_batch_takes_entries_in_stream_order_and_no_key_in_two_batches() -> None:
    d = Dispatch(Ordering.KEY, concurrency=2, unit=3)
    arrive_all(d, ["a", "b", "a", "a", "b", "c"])
    first = d.start()
    assert ids(first) == [b"1-0", b"2-0", b"3-0"]  # key a twice: one batch holds both
    assert ids(d.start()) == [b"6-0"]  # a and b are in the first batch: their later entries wait
    d.arrive(b"7-0", "a")
    assert d.start() is None  # concurrency 2
    assert first is not None
    assert d.finish(first.token, [b"1-0", b"3-0"]) == [b"1-0", b"3-0"]
    assert ids(d.start()) == [b"4-0", b"5-0", b"7-0"]  # the waiting ones first, in order
    with pytest.raises(ValueError, match="not an entry"):
        d.finish(first.token + 1, [b"1-0"])


def test_a_batch_that_is_not_full_fills_until_full_or_due() -> None:
    d = Dispatch(Ordering.NONE, concurrency=2, unit=4, fill=0.3)
    arrive_all(d, ["a", "b"])
    assert d.start(10.0) is None  # two of four: it fills, due at 10.3
    assert d.fill_deadline == pytest.approx(10.3)
    assert ids(d.filling) == [b"1-0", b"2-0"] and d.held == 2 and d.in_flight == 0
    assert not d.startable() and d.running == 1  # one batch fills at a time, in a place
    d.arrive(b"3-0", "c")
    assert d.start(10.1) is None and ids(d.filling) == [b"1-0", b"2-0", b"3-0"]
    d.arrive(b"4-0", "d")
    d.arrive(b"5-0", "e")
    full = d.start(10.2)  # full before it is due: it starts at once
    assert ids(full) == [b"1-0", b"2-0", b"3-0", b"4-0"] and d.fill_deadline is None
    assert d.start(10.2) is None and ids(d.filling) == [b"5-0"]  # the next one fills
    late = d.start(10.5)
    assert ids(late) == [b"5-0"]  # due at 10.5: it starts as it is
    assert full is not None and late is not None
    assert d.finish(full.token, ids(full)) == ids(full) and d.in_flight == 1


def test_a_filling_batch_holds_its_keys_and_takes_a_freed_lane_in_stream_order() -> None:
    d = Dispatch(Ordering.KEY, concurrency=2, unit=4, fill=1.0)
    arrive_all(d, ["a", "a", "a", "a", "b"])
    first = d.start(0.0)
    assert ids(first) == [b"1-0", b"2-0", b"3-0", b"4-0"]
    assert d.start(0.0) is None and ids(d.filling) == [b"5-0"]  # b fills
    d.arrive(b"6-0", "a")  # a is in flight: it waits behind it
    d.arrive(b"7-0", "b")  # b is the filling batch's: it joins, in order
    assert d.start(0.5) is None and ids(d.filling) == [b"5-0", b"7-0"]
    d.pause()
    assert d.start(2.0) is None and d.fill_deadline == 1.0  # paused: it stays, unstarted
    d.resume()
    assert first is not None
    d.finish(first.token, ids(first))  # a is free: its waiting entry may join
    assert d.start(0.6) is None and ids(d.filling) == [b"5-0", b"7-0", b"6-0"]
    second = d.start(1.0)
    assert ids(second) == [b"5-0", b"6-0", b"7-0"]  # due: it starts, in stream order
    assert d.fill_deadline is None and d.running == 1


def test_a_failed_key_blocks_only_itself_and_an_outage_pauses_all() -> None:
    d = Dispatch(Ordering.KEY, concurrency=4)
    arrive_all(d, ["p", "p", "q"])
    poison, other = d.take(10)
    d.block(poison)
    assert d.blocked == {"p"}
    d.done(other)
    d.pause()
    d.arrive(b"4-0", "r")
    assert d.take(10) == []
    d.resume()
    assert ids(d.take(10)) == [b"4-0"]
    assert d.done(poison, ack=False) is None
    assert d.blocked == set()
    assert ids(d.take(10)) == [b"2-0"]


def test_the_eager_gate_for_a_run_of_arrivals() -> None:
    """``lanes_if_free``: what ``may_start_now`` asks, once for a read (the eager path)."""
    d = Dispatch(Ordering.KEY, 2)
    assert d.lanes_if_free() == {}  # free: look each arrival's key up in the busy ones
    d.start_now((b"1-0", "a", None, None))
    assert d.lanes_if_free() == {"a": None} and not d.may_start_now("a") and d.may_start_now("b")
    d.start_now((b"2-0", "b", None, None))
    assert d.lanes_if_free() is False  # no room
    d.step((b"2-0", "b", None, None))
    d.arrive(b"3-0", "c")
    assert d.lanes_if_free() is False  # an entry waits: an arrival must not overtake it
    assert d.next() == (b"3-0", "c", None, None)
    d.step((b"3-0", "c", None, None))
    d.pause()
    assert d.lanes_if_free() is False  # an outage
    d.resume()
    assert d.lanes_if_free() == {"a": None}
    d.arrive(b"4-0", "a")  # parks behind "a" in flight; freed, its lane goes next (ready)
    d.startable()
    d.done((b"1-0", "a", None, None))
    assert d.lanes_if_free() is False
    assert Dispatch(Ordering.NONE, 1).lanes_if_free() is None  # any arrival may start
    one = Dispatch(Ordering.PARTITION, 1)
    assert one.lanes_if_free() is None
    one.start_now((b"1-0", "a", None, None))
    assert one.lanes_if_free() is False


def test_read_ahead_is_bounded_by_concurrency_plus_one_read() -> None:
    d = Dispatch(Ordering.KEY, concurrency=4)
    assert d.want(100) == 100
    arrive_all(d, ["k"] * 5)
    assert d.want(100) == 0


def test_bad_settings_and_unhashable_keys() -> None:
    with pytest.raises(ValueError):
        Dispatch(Ordering.KEY, concurrency=0)
    with pytest.raises(ValueError):
        Dispatch(Ordering.PARTITION, concurrency=2)
    assert lane_key([1, 2]) == lane_key([1, 2])
    assert lane_key(1) == lane_key("1") == b"1"  # they share a partition, and a lane
    assert lane_key(None) != lane_key("None")


# -- the model ---------------------------------------------------------------------------------


class DispatchModel(RuleBasedStateMachine):
    """Random arrivals, takes/starts, finishes, failures and outages against the invariants."""

    READ = 5

    @initialize(
        ordering=st.sampled_from(list(Ordering)),
        concurrency=st.integers(1, 6),
        unit=st.integers(1, 4),
        fill=st.sampled_from([0.0, 0.0, 1.0]),
    )
    def setup(self, ordering: Ordering, concurrency: int, unit: int, fill: float) -> None:
        if ordering is Ordering.PARTITION:
            concurrency = 1
        self.d = Dispatch(ordering, concurrency, unit, fill=fill if unit > 1 else 0.0)
        self.now = 0.0  # the carrier's clock (``start(now)``)
        self.due: float | None = None  # when the batch that fills is due, as seen opening
        self.seq = 0
        self.key_of: dict[bytes, str] = {}
        self.arrived: dict[str, list[bytes]] = defaultdict(list)
        self.started: dict[str, list[bytes]] = defaultdict(list)
        self.running: dict[int, list[Held]] = {}  # the model's token -> the unit's entries
        self.units: dict[int, Held | Start] = {}
        self.tokens = 0
        self.returned: set[bytes] = set()  # finished units' ids the caller asked to ack
        self.acked: list[bytes] = []

    @precondition(lambda self: hasattr(self, "d"))
    @rule(key=st.sampled_from("abcd"))
    def read(self, key: str) -> None:
        if not self.d.want(self.READ):  # the carrier reads only when the rule wants entries
            return
        for _ in range(self.READ):
            self.seq += 1
            entry_id = f"{self.seq}-0".encode()
            self.key_of[entry_id] = key
            self.arrived[key].append(entry_id)
            self.d.arrive(entry_id, key)
            key = chr(ord("a") + (ord(key) - ord("a") + self.seq) % 4)

    @precondition(lambda self: hasattr(self, "d") and self.d.unit == 1)
    @rule(key=st.sampled_from("abcd"), returns=st.booleans())
    def read_and_start_now(self, key: str, returns: bool) -> None:
        """The eager path: an arrival that may start now runs at once without ``arrive``;
        if its handler returned at once it never entered the rule (acked by the carrier),
        else ``start_now`` marks it in flight. One that may not start is ``arrive``d."""
        if not self.d.want(self.READ):
            return
        self.seq += 1
        entry_id = f"{self.seq}-0".encode()
        self.key_of[entry_id] = key
        self.arrived[key].append(entry_id)
        if not self.d.may_start_now(key):
            self.d.arrive(entry_id, key)
        elif returns:
            self.started[key].append(entry_id)
            self.returned.add(entry_id)
            self.acked.append(entry_id)
        else:
            held = self.d.start_now((entry_id, key, None, None))
            self._started(held, [held])

    @precondition(lambda self: hasattr(self, "d") and self.d.unit == 1)
    @rule(keys=st.lists(st.sampled_from("abcd"), min_size=1, max_size=3),
          suspends=st.integers(0, 3))
    def eager_run(self, keys: list[str], suspends: int) -> None:
        """``eager.Eager.run`` over a read: one gate for the run (``lanes_if_free``); from the
        first arrival that may not start, or after the one whose handler suspends (index
        ``suspends``; started with ``start_now``), the rest ``arrive`` for the rule."""
        if not self.d.want(self.READ):
            return
        free = self.d.lanes_if_free()
        eager = free is not False
        for i, key in enumerate(keys):
            self.seq += 1
            entry_id = f"{self.seq}-0".encode()
            self.key_of[entry_id] = key
            self.arrived[key].append(entry_id)
            if eager and free is not None and key in free:
                eager = False
            if not eager:
                self.d.arrive(entry_id, key)
            elif i == suspends:
                held = self.d.start_now((entry_id, key, None, None))
                self._started(held, [held])
                eager = False
            else:
                self.started[key].append(entry_id)
                self.returned.add(entry_id)
                self.acked.append(entry_id)

    def _started(self, unit: Held | Start, entries: list[Held]) -> None:
        self.tokens += 1
        token = self.tokens
        for held in entries:
            self.started[self.key_of[held[0]]].append(held[0])
        self.running[token] = entries
        self.units[token] = unit

    @precondition(lambda self: hasattr(self, "d"))
    @rule(limit=st.integers(1, 4))
    def start(self, limit: int) -> None:
        expected = self.d.startable()
        if self.d.unit == 1:
            taken = self.d.take(limit)
            assert bool(taken) == expected
            for held in taken:
                self._started(held, [held])
            return
        d = self.d
        filling = d.fill_deadline is not None
        s = d.start(self.now)
        if not d.fill:
            assert (s is not None) == expected
        else:  # a batch opens (or one fills); it starts once full or due, not before
            assert expected or filling or s is None
            if d.fill_deadline is not None:  # it fills (paused: it waits, as it is)
                assert s is None
                if self.due is None:
                    self.due = self.now + d.fill
                assert d.fill_deadline == self.due
                assert d.paused or self.due > self.now
                assert 1 <= len(d.filling) < d.unit
            elif s is not None:
                due = self.due if self.due is not None else self.now + d.fill
                assert len(s.entries) == d.unit or self.now >= due
                self.due = None
        if s is not None:
            assert 1 <= len(s.entries) <= self.d.unit
            self._started(s, s.entries)

    @precondition(lambda self: hasattr(self, "d") and self.d.fill)
    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: hasattr(self, "d") and self.running)
    @rule(data=st.data(), how=st.sampled_from(["all", "none", "some"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        token = data.draw(st.sampled_from(sorted(self.running)))
        entries = self.running.pop(token)
        unit = self.units.pop(token)
        wanted = [held[0] for held in entries]
        wanted = {"all": wanted, "none": [], "some": wanted[::2]}[how]
        if isinstance(unit, Start):
            got = self.d.finish(unit.token, wanted)
        else:
            one = self.d.done(unit, bool(wanted))
            got = [] if one is None else [one]
        assert got == wanted
        self.returned.update(got)
        self.acked.extend(got)

    @precondition(lambda self: hasattr(self, "d") and self.d.unit == 1 and self.running)
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """The event form's success path: ``step`` acks a unit (never blocked) and starts the
        next one, if any may start."""
        d = self.d
        unblocked = [t for t, (held,) in self.running.items() if held[1] not in d.blocked]
        if not unblocked:
            return
        token = data.draw(st.sampled_from(sorted(unblocked)))
        (held,) = self.running.pop(token)
        self.units.pop(token)
        before = len(d.acks)
        nxt = d.step(held)
        assert d.acks[before:] == [held[0]]
        self.returned.add(held[0])
        self.acked.append(held[0])
        if nxt is not None:
            self._started(nxt, [nxt])

    @precondition(lambda self: hasattr(self, "d") and self.running)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(sorted(self.running)))
        self.d.block(self.units[token])
        if self.d.ordering is Ordering.KEY:
            assert all(held[1] in self.d.blocked for held in self.running[token])

    @precondition(lambda self: hasattr(self, "d"))
    @rule(paused=st.booleans())
    def outage(self, paused: bool) -> None:
        if paused:
            self.d.pause()
            assert self.d.take(5) == [] and self.d.start(self.now) is None
        else:
            self.d.resume()

    @invariant()
    def invariants(self) -> None:
        if not hasattr(self, "d"):
            return
        d = self.d
        # nothing acked before its handler returned, and each id at most once
        assert set(self.acked) <= self.returned
        assert set(d.acks) <= self.returned  # what ``step`` put in the commit buffer
        assert len(self.acked) == len(set(self.acked))
        # in flight and read-ahead bounded (a batch that fills holds a place, and its entries)
        filling = d.filling
        assert bool(filling) == (d.fill_deadline is not None)
        assert d.running == len(self.running) + bool(filling) <= d.concurrency
        assert d.in_flight == sum(len(e) for e in self.running.values())
        assert len(filling) < d.unit or not filling
        assert d.held <= d.concurrency * d.unit + self.READ
        assert not set(d.acks) & {held[0] for held in filling}
        if d.ordering is Ordering.NONE:
            return
        # never two units holding one key in flight (nor one in flight and the filling batch)
        owners: dict[str, int] = {}
        for token, entries in [*self.running.items(), (0, filling)]:
            for held in entries:
                key = self.key_of[held[0]] if d.ordering is Ordering.KEY else "*"
                assert owners.setdefault(key, token) == token
        # a key's entries start in stream order (all of them, with one lane)
        for key, started in self.started.items():
            if d.ordering is Ordering.KEY:
                assert started == self.arrived[key][: len(started)]
        if d.ordering is Ordering.PARTITION:
            every = sorted((e for s in self.started.values() for e in s), key=_seq)
            assert every == [f"{i}-0".encode() for i in range(1, len(every) + 1)]


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


TestDispatchModel = DispatchModel.TestCase
TestDispatchModel.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)


class Loose(Record):
    """A key field of any type: ``1`` and ``"1"`` share a partition."""

    key: Any
    seq: int


class Tight(Record):
    key: int
    seq: int


def test_a_typed_key_field_of_two_types_is_normalised_like_the_partitioner() -> None:
    system = System("lanes", "redis://127.0.0.1:1", install_signal_handlers=False)
    loose = system.stream("loose", record=Loose, partitions=4, key="key")
    lane_of = _lane_getter(loose)
    assert lane_of(Loose(key=1, seq=1)) == lane_of(Loose(key="1", seq=2))
    assert loose.partition_of(Loose(key=1, seq=1)) == loose.partition_of(Loose(key="1", seq=2))
    assert lane_of(Loose(key=1, seq=1)) != lane_of(Loose(key="2", seq=1))
    tight = system.stream("tight", record=Tight, partitions=4, key="key")
    assert _lane_getter(tight)(Tight(key=7, seq=1)) == 7  # one type: the value as it is


def test_a_key_function_gives_lanes_normalised_like_the_partitioner() -> None:
    system = System("lanes", "redis://127.0.0.1:1", install_signal_handlers=False)
    plain = system.stream("plain", partitions=4, key=lambda event: event["k"])
    lane_of = _lane_getter(plain)
    assert lane_of({"k": 1}) == lane_of({"k": "1"}) != lane_of({"k": 2})
