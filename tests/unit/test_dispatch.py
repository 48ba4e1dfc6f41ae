"""The dispatch rule (``_core.dispatch``) without Redis: examples, then a Hypothesis model.

The model drives a ``Dispatch`` with random arrivals, starts, finishes (acking some, all or
none of a unit), failures and outages, and checks after every step: never two units holding
one key in flight, a key's entries start in stream order, nothing offered for acking before
its unit finished (and only what the caller named), in-flight and read-ahead bounded.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actorstream._core.dispatch import Dispatch, Ordering, Start, lane_key


def ids(start: Start | None) -> list[bytes]:
    assert start is not None
    return [held.entry_id for held in start.entries]


def arrive_all(d: Dispatch, keys: list[Any]) -> None:
    for i, key in enumerate(keys, 1):
        d.arrive(f"{i}-0".encode(), key)


# -- examples ----------------------------------------------------------------------------------


def test_key_ordering_runs_keys_concurrently_and_a_key_in_order() -> None:
    d = Dispatch(Ordering.KEY, concurrency=8)
    arrive_all(d, ["a", "b", "a", "c"])
    first = [d.start(), d.start(), d.start()]
    assert [ids(s) for s in first] == [[b"1-0"], [b"2-0"], [b"4-0"]]
    assert d.start() is None  # 3-0 waits behind 1-0 (key a)
    assert d.in_flight == 3 and d.held == 4 and d.waiting == 1
    assert first[0] is not None
    d.finish(first[0].token, [b"1-0"])
    assert d.take_acks() == [b"1-0"]
    assert d.take_acks() == []
    assert ids(d.start()) == [b"3-0"]


def test_partition_ordering_is_one_lane() -> None:
    d = Dispatch(Ordering.PARTITION, concurrency=1)
    arrive_all(d, ["a", "b"])
    s = d.start()
    assert ids(s) == [b"1-0"]
    assert d.start() is None
    assert s is not None
    d.finish(s.token, [b"1-0"])
    assert ids(d.start()) == [b"2-0"]


def test_none_ordering_ignores_keys_up_to_concurrency() -> None:
    d = Dispatch(Ordering.NONE, concurrency=2)
    arrive_all(d, ["a", "a", "a"])
    assert ids(d.start()) == [b"1-0"]
    assert ids(d.start()) == [b"2-0"]
    assert d.start() is None and not d.startable()


def test_a_batch_takes_a_keys_entries_in_order_and_no_key_in_two_batches() -> None:
    d = Dispatch(Ordering.KEY, concurrency=2, unit=3)
    arrive_all(d, ["a", "b", "a", "a", "b", "c"])
    first = d.start()
    # key a's three entries fill the batch; b and c go to the next one
    assert ids(first) == [b"1-0", b"3-0", b"4-0"]
    assert ids(d.start()) == [b"2-0", b"5-0", b"6-0"]
    d.arrive(b"7-0", "a")
    assert d.start() is None  # concurrency 2, and key a is in flight


def test_a_failed_key_blocks_only_itself_and_an_outage_pauses_all() -> None:
    d = Dispatch(Ordering.KEY, concurrency=4)
    arrive_all(d, ["p", "p", "q"])
    poison = d.start()
    assert poison is not None
    d.block(poison.token)
    assert d.blocked == {"p"}
    assert ids(d.start()) == [b"3-0"]
    d.pause()
    d.arrive(b"4-0", "r")
    assert d.start() is None
    d.resume()
    assert ids(d.start()) == [b"4-0"]
    d.finish(poison.token)  # dead-lettered: the move acked it
    assert d.blocked == set() and d.take_acks() == []


def test_finish_refuses_ids_of_another_unit() -> None:
    d = Dispatch(Ordering.KEY, concurrency=4)
    arrive_all(d, ["a", "b"])
    s = d.start()
    assert s is not None
    with pytest.raises(ValueError, match="not an entry"):
        d.finish(s.token, [b"2-0"])
    d.finish(s.token, [b"1-0"])


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
    """Random arrivals, starts, finishes, failures and outages against the invariants."""

    READ = 5

    @initialize(
        ordering=st.sampled_from(list(Ordering)),
        concurrency=st.integers(1, 6),
        unit=st.integers(1, 4),
    )
    def setup(self, ordering: Ordering, concurrency: int, unit: int) -> None:
        if ordering is Ordering.PARTITION:
            concurrency = 1
        self.d = Dispatch(ordering, concurrency, unit)
        self.seq = 0
        self.key_of: dict[bytes, str] = {}
        self.arrived: dict[str, list[bytes]] = defaultdict(list)
        self.started: dict[str, list[bytes]] = defaultdict(list)
        self.running: dict[int, Start] = {}
        self.returned: set[bytes] = set()  # ids whose unit finished and that were to be acked
        self.acked: list[bytes] = []

    @precondition(lambda self: hasattr(self, "d"))
    @rule(key=st.sampled_from("abcd"))
    def read(self, key: str) -> None:
        # The carrier reads only when the rule wants entries (read-ahead bound).
        if not self.d.want(self.READ):
            return
        for _ in range(self.READ):
            self.seq += 1
            entry_id = f"{self.seq}-0".encode()
            self.key_of[entry_id] = key
            self.arrived[key].append(entry_id)
            self.d.arrive(entry_id, key)
            key = chr(ord("a") + (ord(key) - ord("a") + self.seq) % 4)

    @precondition(lambda self: hasattr(self, "d"))
    @rule()
    def start(self) -> None:
        expected = self.d.startable()
        s = self.d.start()
        assert (s is not None) == expected
        if s is None:
            return
        assert 1 <= len(s.entries) <= self.d.unit
        for held in s.entries:
            self.started[self.key_of[held.entry_id]].append(held.entry_id)
        self.running[s.token] = s

    @precondition(lambda self: hasattr(self, "d") and self.running)
    @rule(data=st.data(), how=st.sampled_from(["all", "none", "some"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        token = data.draw(st.sampled_from(sorted(self.running)))
        unit = [held.entry_id for held in self.running.pop(token).entries]
        acks = {"all": unit, "none": [], "some": unit[::2]}[how]
        self.d.finish(token, acks)
        self.returned.update(acks)

    @precondition(lambda self: hasattr(self, "d") and self.running)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(sorted(self.running)))
        self.d.block(token)
        for held in self.running[token].entries:
            assert held.key in self.d.blocked or self.d.ordering is not Ordering.KEY

    @precondition(lambda self: hasattr(self, "d"))
    @rule(paused=st.booleans())
    def outage(self, paused: bool) -> None:
        if paused:
            self.d.pause()
            assert self.d.start() is None
        else:
            self.d.resume()

    @precondition(lambda self: hasattr(self, "d"))
    @rule()
    def commit(self) -> None:
        self.acked.extend(self.d.take_acks())

    @invariant()
    def invariants(self) -> None:
        if not hasattr(self, "d"):
            return
        d = self.d
        # nothing acked before its handler returned, and each id at most once
        assert set(self.acked) <= self.returned
        assert len(self.acked) == len(set(self.acked))
        # in flight and read-ahead bounded
        assert d.running == len(self.running) <= d.concurrency
        assert d.in_flight == sum(len(s.entries) for s in self.running.values())
        assert d.held <= d.concurrency * d.unit + self.READ
        if d.ordering is Ordering.NONE:
            return
        # never two units holding one key in flight
        owners: dict[str, int] = {}
        for token, s in self.running.items():
            for held in s.entries:
                key = self.key_of[held.entry_id] if d.ordering is Ordering.KEY else "*"
                assert owners.setdefault(key, token) == token
        # a key's entries start in stream order
        for key, started in self.started.items():
            if d.ordering is Ordering.KEY:
                assert started == self.arrived[key][: len(started)]
        if d.ordering is Ordering.PARTITION:
            every = [e for s in self.started.values() for e in s]
            assert sorted(every, key=_seq) == [
                f"{i}-0".encode() for i in range(1, len(every) + 1)
            ]


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


TestDispatchModel = DispatchModel.TestCase
TestDispatchModel.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
