"""The dispatch rule as data: which of a partition's entries may start, and which may be acked.

No trio, no sockets (h11-style, like ``protocol``): the partition actor reports what happened
(entries arrived, a handling finished, a key's event failed, an outage began or ended) and asks
what to do next (start this unit, read this many entries, ack these ids). Every invariant is
tested without Redis (tests/unit/test_dispatch.py, Hypothesis):

- never two units holding one key in flight (``KEY``, ``PARTITION``: one lane per key, or
  one lane for the whole partition);
- a key's entries start in the order they arrived (stream order);
- an id is offered for acking only once its unit finished, and only if the caller says so
  (a dead-lettered entry was acked by its move);
- at most ``concurrency`` units in flight, at most ``concurrency * unit + read`` entries held.

A *unit* is what one handler call takes: one entry for the event form, up to ``unit`` entries
for the batch form (with ``KEY``, a key's entries go to one batch at a time, in order).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any, NamedTuple

from .hashing import key_bytes

__all__ = ["Dispatch", "Held", "Ordering", "Start", "lane_key"]


class Ordering(enum.Enum):
    """What order a partition's events are handled in (``@system.actor(ordering=...)``)."""

    PARTITION = "partition"  # one at a time, in stream order
    KEY = "key"  # one event of a key at a time, in stream order; keys concurrently
    NONE = "none"  # any order, ``concurrency`` at a time


class Held(NamedTuple):
    """One entry the partition holds: its id, its lane's key, and the carrier's payload."""

    entry_id: bytes
    key: Hashable
    item: Any


class Start(NamedTuple):
    """A unit that may start now: its token (for ``finish``) and its entries, in stream order."""

    token: int
    entries: list[Held]


_ONE_LANE: Hashable = ("partition",)


def lane_key(key: object) -> Hashable:
    """The lane of an event's key: its partition-key bytes (so ``1`` and ``"1"``, which share a
    partition, share a lane too); a key those rules refuse (None on a one-partition stream)
    is its own lane."""
    if type(key) is str:
        return key.encode("utf-8")
    try:
        return key_bytes(key)
    except TypeError:
        pass
    try:
        hash(key)
    except TypeError:
        return ("unhashable", repr(key))
    return ("value", key)


class Dispatch:
    """The lanes of one partition actor for one lease epoch.

    ``arrive`` entries in stream order; ``start`` hands out the next unit that may run (None:
    nothing may start now); ``finish`` a unit when its handler call is over, naming the ids to
    ack; ``take_acks`` empties what may ride on the next fenced round trip; ``want`` says how
    many new entries to read (0: enough held). ``block``/``pause`` are visible state: a key
    whose event failed and is being retried (its later events wait behind it), and a partition
    backing off (an outage: nothing new starts until ``resume``).
    """

    __slots__ = (
        "_acks",
        "_busy",
        "_lanes",
        "_next_token",
        "_ready",
        "_running",
        "blocked",
        "concurrency",
        "held",
        "in_flight",
        "ordering",
        "paused",
        "unit",
    )

    def __init__(self, ordering: Ordering, concurrency: int, unit: int = 1) -> None:
        if concurrency < 1 or unit < 1:
            raise ValueError("Dispatch needs concurrency >= 1 and unit >= 1")
        if ordering is Ordering.PARTITION and concurrency != 1:
            raise ValueError("ordering PARTITION runs one unit at a time (concurrency 1)")
        self.ordering = ordering
        self.concurrency = concurrency
        self.unit = unit
        self.held = 0  # entries arrived and not finished (waiting or in flight)
        self.in_flight = 0  # entries of started, unfinished units
        self.paused = False
        self.blocked: set[Hashable] = set()  # keys whose event in flight failed
        self._lanes: dict[Hashable, deque[Held]] = {}  # waiting entries per key, in order
        self._ready: deque[Hashable] = deque()  # keys with waiting entries and none in flight
        self._busy: set[Hashable] = set()  # keys of units in flight
        self._running: dict[int, tuple[list[Hashable], list[Held]]] = {}  # token -> its unit
        self._acks: list[bytes] = []
        self._next_token = 0

    # -- what happened -------------------------------------------------------------------------

    def arrive(self, entry_id: bytes, key: Hashable, item: Any = None) -> None:
        """An entry read from the stream (in stream order). ``key`` must be hashable
        (``lane_key``); it is ignored unless the ordering is ``KEY``."""
        if self.ordering is not Ordering.KEY:
            key = _ONE_LANE if self.ordering is Ordering.PARTITION else entry_id
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = deque((Held(entry_id, key, item),))
            if key not in self._busy:
                self._ready.append(key)
        else:
            lane.append(Held(entry_id, key, item))
        self.held += 1

    def finish(self, token: int, acks: Iterable[bytes] = ()) -> None:
        """The unit ``token`` is over: its handler returned (ack its ids), or its entries were
        settled otherwise (dead-lettered: the move acked them; stopped: left pending)."""
        keys, entries = self._running[token]
        acks = list(acks)
        for entry_id in acks:
            if not any(held.entry_id == entry_id for held in entries):
                raise ValueError(f"{entry_id!r} is not an entry of unit {token}")
        del self._running[token]
        self._acks.extend(acks)
        self.in_flight -= len(entries)
        self.held -= len(entries)
        for key in keys:
            self._busy.discard(key)
            self.blocked.discard(key)
            if key in self._lanes:
                self._ready.append(key)

    def block(self, token: int) -> None:
        """The unit ``token`` failed and is being retried: its keys wait behind it."""
        self.blocked.update(self._running[token][0])

    def pause(self) -> None:
        """An outage: start nothing new until ``resume`` (units in flight carry on)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    # -- what to do ----------------------------------------------------------------------------

    def start(self) -> Start | None:
        """The next unit that may start, marked in flight; None if none may start now."""
        if self.paused or len(self._running) >= self.concurrency or not self._ready:
            return None
        ready = self._ready
        lanes = self._lanes
        busy = self._busy
        entries: list[Held] = []
        keys: list[Hashable] = []
        room = self.unit
        while ready and room:
            key = ready.popleft()
            lane = lanes[key]
            while lane and room:
                entries.append(lane.popleft())
                room -= 1
            if not lane:
                del lanes[key]
            busy.add(key)
            keys.append(key)
        if len(keys) > 1:
            entries.sort(key=_arrival)
        token = self._next_token
        self._next_token = token + 1
        self._running[token] = (keys, entries)
        self.in_flight += len(entries)
        return Start(token, entries)

    def startable(self) -> bool:
        """Would ``start`` hand out a unit now?"""
        return bool(self._ready) and not self.paused and len(self._running) < self.concurrency

    def want(self, read: int) -> int:
        """How many new entries to read now: ``read`` while at most ``concurrency * unit``
        are held (so never more than that plus one read), else 0."""
        return read if self.held <= self.concurrency * self.unit else 0

    def take_acks(self) -> list[bytes]:
        """The ids that may be acked now (their handlers returned), emptied."""
        acks = self._acks
        if acks:
            self._acks = []
        return acks

    @property
    def acks_pending(self) -> bool:
        return bool(self._acks)

    @property
    def running(self) -> int:
        """Units in flight."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Entries held that have not started."""
        return self.held - self.in_flight


def _arrival(held: Held) -> tuple[int, int]:
    ms, _, seq = held.entry_id.partition(b"-")
    return int(ms), int(seq or 0)
