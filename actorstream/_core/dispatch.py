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


class Ordering(enum.StrEnum):
    """What order a partition's events are handled in (``@system.actor(ordering=...)``).

    A ``str`` enum: ``settings.ordering == "key"`` holds, as the declaration was written."""

    PARTITION = "partition"  # one at a time, in stream order
    KEY = "key"  # one event of a key at a time, in stream order; keys concurrently
    NONE = "none"  # any order, ``concurrency`` at a time


class Held(NamedTuple):
    """One entry the partition holds: its id, its lane's key, and the carrier's payload."""

    entry_id: bytes
    key: Hashable
    event: Any
    fields: Any


class Start(NamedTuple):
    """A batch that may start now: its token (for ``finish``) and its entries, in stream order."""

    token: int
    entries: list[Held]


_new = tuple.__new__  # a Held without NamedTuple's Python-level __new__ (per entry)

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

    ``arrive`` entries in stream order. Units of one entry (the event form): ``take`` hands out
    entries that may start now (each its key's oldest waiting one, keys distinct), ``done``
    one when its handler call is over and says whether to ack it. Units of up to ``unit``
    entries (the batch form): ``start`` and ``finish``. ``want`` says how many new entries to
    read (0: enough held). ``block``/``pause`` are visible state: a key whose event failed and
    is being retried (its later events wait behind it), and a partition backing off (an
    outage: nothing new starts until ``resume``).

    Per entry on the hot path: ``arrive``, ``take`` (amortized over a run) and ``done``, each a
    few dict and deque operations; the carrier's no-op handler runs at most a few tenths slower
    than with one event at a time (``nox -s bench``).
    """

    __slots__ = (
        "_free",
        "_keyed",
        "_lanes",
        "_next_token",
        "_ready",
        "_units",
        "blocked",
        "concurrency",
        "held",
        "ordering",
        "paused",
        "running",
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
        self.running = 0  # units started and not finished
        self.paused = False
        self.blocked: set[Hashable] = set()  # keys whose event in flight failed
        self._keyed = ordering is not Ordering.NONE
        self._free: deque[Held] = deque()  # ordering NONE: waiting entries, in order
        # A key has a lane while it has entries waiting or in flight (its waiting ones, in
        # order); it is in ``_ready`` while it has entries waiting and none in flight.
        self._lanes: dict[Hashable, list[Held]] = {}  # (lists: short, and cheap to make)
        self._ready: deque[Hashable] = deque()
        self._units: dict[int, tuple[list[Hashable], list[Held]]] = {}  # batch units
        self._next_token = 0

    # -- what happened -------------------------------------------------------------------------

    def arrive(self, entry_id: bytes, key: Hashable, event: Any = None, fields: Any = None) -> None:
        """An entry read from the stream (in stream order). ``key`` must be hashable
        (``lane_key``); it is ignored unless the ordering is ``KEY``."""
        self.held += 1
        if not self._keyed:
            self._free.append(_new(Held, (entry_id, entry_id, event, fields)))
            return
        if self.ordering is Ordering.PARTITION:
            key = _ONE_LANE
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = [_new(Held, (entry_id, key, event, fields))]
            self._ready.append(key)
        else:
            lane.append(_new(Held, (entry_id, key, event, fields)))

    def done(self, held: Held, ack: bool = True) -> bytes | None:
        """The handler call of ``held`` (taken) is over: the id to ack if ``ack`` (it returned),
        else None (dead-lettered: the move acked it; stopped: it stays pending)."""
        self.running -= 1
        self.held -= 1
        if self._keyed:
            key = held.key
            if self._lanes[key]:
                self._ready.append(key)
            else:
                del self._lanes[key]
            if self.blocked:
                self.blocked.discard(key)
        return held.entry_id if ack else None

    def finish(self, token: int, acks: Iterable[bytes] = ()) -> list[bytes]:
        """The batch ``token`` is over: the ids of ``acks`` to ack (its handler returned for
        them); the others were settled otherwise. Ids not of this batch are refused."""
        keys, entries = self._units[token]
        ids = {held.entry_id for held in entries}
        out = list(acks)
        for entry_id in out:
            if entry_id not in ids:
                raise ValueError(f"{entry_id!r} is not an entry of unit {token}")
        del self._units[token]
        self.running -= 1
        self.held -= len(entries)
        lanes = self._lanes
        for key in keys:
            self.blocked.discard(key)
            if lanes[key]:
                self._ready.append(key)
            else:
                del lanes[key]
        return out

    def block(self, held: Held | Start) -> None:
        """``held`` (or a batch) failed and is being retried: its keys wait behind it."""
        if isinstance(held, Start):
            self.blocked.update(self._units[held.token][0])
        elif self._keyed:
            self.blocked.add(held.key)

    def pause(self) -> None:
        """An outage: start nothing new until ``resume`` (units in flight carry on)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    # -- what to do ----------------------------------------------------------------------------

    def take(self, limit: int) -> list[Held]:
        """Up to ``limit`` entries that may start now, each a unit of its own, marked in
        flight (never more than ``concurrency`` in flight; [] when paused)."""
        n = min(limit, self.concurrency - self.running)
        if self.paused or n <= 0:
            return []
        out: list[Held] = []
        if not self._keyed:
            free = self._free
            while free and n:
                out.append(free.popleft())
                n -= 1
        else:
            ready, lanes = self._ready, self._lanes
            while ready and n:
                out.append(lanes[ready.popleft()].pop(0))
                n -= 1
        self.running += len(out)
        return out

    def start(self) -> Start | None:
        """The next batch (up to ``unit`` entries; with ``KEY`` no key in two batches in
        flight) that may start now, marked in flight; None if none may start now."""
        if not self.startable():
            return None
        entries: list[Held] = []
        keys: list[Hashable] = []
        room = self.unit
        if not self._keyed:
            free = self._free
            while free and room:
                entries.append(free.popleft())
                room -= 1
        ready, lanes = self._ready, self._lanes
        while ready and room:
            key = ready.popleft()
            lane = lanes[key]
            while lane and room:
                entries.append(lane.pop(0))
                room -= 1
            keys.append(key)
        if len(keys) > 1:
            entries.sort(key=_arrival)
        token = self._next_token
        self._next_token = token + 1
        self._units[token] = (keys, entries)
        self.running += 1
        return Start(token, entries)

    def startable(self) -> bool:
        """Would ``take``/``start`` hand out a unit now?"""
        return (
            bool(self._ready or self._free)
            and not self.paused
            and self.running < self.concurrency
        )

    def want(self, read: int) -> int:
        """How many new entries to read now: ``read`` while at most ``concurrency * unit``
        are held (so never more than that plus one read), else 0."""
        return read if self.held <= self.concurrency * self.unit else 0

    @property
    def in_flight(self) -> int:
        """Entries of started, unfinished units."""
        if self.unit == 1:
            return self.running
        return sum(len(entries) for _, entries in self._units.values())

    @property
    def waiting(self) -> int:
        """Entries held that have not started."""
        return self.held - self.in_flight


def _arrival(held: Held) -> tuple[int, int]:
    ms, _, seq = held.entry_id.partition(b"-")
    return int(ms), int(seq or 0)
