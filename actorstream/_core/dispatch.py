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
for the batch form (with ``KEY``, a key's entries go to one batch at a time, in order). With
``fill`` (the batch form's ``batch_wait``), a batch that is not full *fills* first: it holds its
entries and keys (and a place among the ``concurrency``) as if in flight, takes what may join
it as it arrives, and starts once full or ``fill`` seconds after it opened, whichever is first;
one batch fills at a time. The time is the caller's (``start(now)``): the rule keeps no clock.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal, NamedTuple

from .hashing import key_bytes

__all__ = ["Dispatch", "Held", "Ordering", "Start", "lane_key"]


class Ordering(enum.StrEnum):
    """What order a partition's events are handled in (``@system.actor(ordering=...)``).

    A ``str`` enum: ``settings.ordering == "key"`` holds, as the declaration was written."""

    PARTITION = "partition"  # one at a time, in stream order
    KEY = "key"  # one event of a key at a time, in stream order; keys concurrently
    NONE = "none"  # any order, ``concurrency`` at a time


#: One entry the partition holds: ``(entry_id, key, event, fields)``: its id, its lane's key,
#: and the carrier's payload. A plain tuple, made per entry on the hot path (a NamedTuple cost
#: a Python-level constructor call, and indexing it is not specialized by the interpreter).
Held = tuple[bytes, Hashable, Any, Any]


class _Filling:
    """The batch that fills (``Dispatch.fill``): its keys and entries so far, when it is due."""

    __slots__ = ("due", "entries", "keys", "mine", "unsorted")

    def __init__(self, due: float) -> None:
        self.due = due
        self.keys: list[Hashable] = []
        self.entries: list[Held] = []
        self.mine: set[Hashable] = set()
        self.unsorted = False  # entries of more than one parked lane: sort before it starts


class Start(NamedTuple):
    """A batch that may start now: its token (for ``finish``) and its entries, in stream order."""

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

    ``arrive`` (or ``arrive_many``) entries in stream order. Units of one entry (the event
    form): ``next`` hands out one entry that may start now (its key's oldest waiting one, its
    key free), ``take`` several, ``done`` one when its handler call is over and says whether
    to ack it; ``step`` is the success path in one call (``done`` with its id put in ``acks``,
    then ``next``). Units of up to ``unit`` entries (the batch form): ``start`` and
    ``finish`` (with ``fill``, ``start(now)`` may hold a batch back to fill it:
    ``fill_deadline``). ``want`` says how many new entries to read (0: enough held). ``block``/
    ``pause`` are visible state: a key whose event failed and is being retried (its later
    events wait behind it), and a partition backing off (an outage: nothing new starts until
    ``resume``).

    The common case costs a few operations per entry: arrivals join one queue (a read batch
    at once); ``step`` frees the finished entry's key (one dict delete), pops the queue's head
    and marks its key busy (one dict insert). Only an entry whose key is busy when it comes up
    is parked, in its key's lane; a freed key's lane goes on (``_ready``) before the queue.
    """

    __slots__ = (
        "_batched",
        "_busy",
        "_filling",
        "_keyed",
        "_next_token",
        "_parked",
        "_queue",
        "_ready",
        "_units",
        "acks",
        "blocked",
        "concurrency",
        "fill",
        "ordering",
        "paused",
        "running",
        "step",
        "unit",
    )

    def __init__(
        self,
        ordering: Ordering,
        concurrency: int,
        unit: int = 1,
        acks: list[bytes] | None = None,
        fill: float = 0.0,
    ) -> None:
        if concurrency < 1 or unit < 1:
            raise ValueError("Dispatch needs concurrency >= 1 and unit >= 1")
        if fill < 0:
            raise ValueError("Dispatch needs fill >= 0 (seconds)")
        if ordering is Ordering.PARTITION and concurrency != 1:
            raise ValueError("ordering PARTITION runs one unit at a time (concurrency 1)")
        self.ordering = ordering
        self.concurrency = concurrency
        self.unit = unit
        #: How long a batch that is not full may wait for more entries (seconds; 0: never).
        self.fill = fill
        self._filling: _Filling | None = None
        #: Where ``step`` puts the ids of the entries it finishes (the carrier's commit buffer).
        self.acks: list[bytes] = [] if acks is None else acks
        self.running = 0  # units started and not finished
        self.paused = False
        self.blocked: set[Hashable] = set()  # keys whose event in flight failed
        self._keyed = ordering is not Ordering.NONE
        self._queue: deque[Held] = deque()  # arrived, not looked at yet: stream order
        # A key is busy while it has an entry in flight or reserved for the next unit: its
        # value is None, or its lane (a deque, never empty) of parked entries in stream order.
        # A parked entry is older than every entry still in ``_queue``.
        self._busy: dict[Hashable, deque[Held] | None] = {}
        self._ready: deque[Hashable] = deque()  # keys freed with entries parked (reserved)
        self._parked = 0  # entries in lanes
        self._batched = 0  # entries of batch units in flight
        self._units: dict[int, tuple[list[Hashable], list[Held]]] = {}  # batch units
        self._next_token = 0
        self.step: Callable[[Held], Held | None] = (
            self._step_keyed if self._keyed else self._step_free
        )

    @property
    def held(self) -> int:
        """Entries arrived and not finished (waiting, in the batch that fills, or in flight)."""
        held = len(self._queue) + self._parked + self.in_flight
        return held if self._filling is None else held + len(self._filling.entries)

    @property
    def in_flight(self) -> int:
        """Entries of started, unfinished units."""
        return self.running if self.unit == 1 else self._batched

    @property
    def waiting(self) -> int:
        """Entries held that have not started (the batch that fills not included)."""
        return len(self._queue) + self._parked

    @property
    def filling(self) -> list[Held]:
        """The entries of the batch that fills, in the order they joined (none: empty)."""
        return [] if self._filling is None else list(self._filling.entries)

    @property
    def fill_deadline(self) -> float | None:
        """When the batch that fills is due (``start(now)`` starts it from then on, or
        once it is full); None if no batch fills."""
        return None if self._filling is None else self._filling.due

    # -- what happened -------------------------------------------------------------------------

    def arrive(self, entry_id: bytes, key: Hashable, event: Any = None, fields: Any = None) -> None:
        """An entry read from the stream (in stream order). ``key`` must be hashable
        (``lane_key``); it is ignored unless the ordering is ``KEY``."""
        self.arrive_many([(entry_id, key, event, fields)])

    def arrive_many(self, entries: list[Held]) -> None:
        """Entries read from the stream, in stream order (a read batch at once)."""
        if self.ordering is Ordering.PARTITION:
            entries = [(held[0], _ONE_LANE, held[2], held[3]) for held in entries]
        self._queue.extend(entries)

    def done(self, held: Held, ack: bool = True) -> bytes | None:
        """The handler call of ``held`` (taken) is over: the id to ack if ``ack`` (it returned),
        else None (dead-lettered: the move acked it; stopped: it stays pending)."""
        self.running -= 1
        if self._keyed:
            key = held[1]
            self._free(key)
            if self.blocked:
                self.blocked.discard(key)
        return held[0] if ack else None

    def _step_keyed(self, held: Held) -> Held | None:
        """``step`` with keys (``KEY``, ``PARTITION``), for an entry that was never blocked."""
        self.acks.append(held[0])
        busy = self._busy
        key = held[1]
        if busy[key] is None:
            del busy[key]
        else:
            self._ready.append(key)  # its parked entries go next (the key stays busy)
        if self._ready or self.paused:
            self.running -= 1
            return self.next()
        queue = self._queue
        while queue:  # (the one unit finished, the next started: ``running`` stays)
            held = queue.popleft()
            key = held[1]
            if key in busy:
                self._park(key, held)
                continue
            busy[key] = None
            return held
        self.running -= 1
        return None

    def _step_free(self, held: Held) -> Held | None:
        """``step`` with ``NONE``."""
        self.acks.append(held[0])
        if self._queue and not self.paused:
            return self._queue.popleft()
        self.running -= 1
        return None

    def finish(self, token: int, acks: Iterable[bytes] = ()) -> list[bytes]:
        """The batch ``token`` is over: the ids of ``acks`` to ack (its handler returned for
        them); the others were settled otherwise. Ids not of this batch are refused."""
        keys, entries = self._units[token]
        ids = {held[0] for held in entries}
        out = list(acks)
        for entry_id in out:
            if entry_id not in ids:
                raise ValueError(f"{entry_id!r} is not an entry of unit {token}")
        del self._units[token]
        self.running -= 1
        self._batched -= len(entries)
        for key in keys:
            self.blocked.discard(key)
            self._free(key)
        return out

    def _free(self, key: Hashable) -> None:
        """A unit holding ``key`` is over: the key is free, or its lane goes next."""
        if self._busy[key] is None:
            del self._busy[key]
        else:
            self._ready.append(key)

    def block(self, held: Held | Start) -> None:
        """``held`` (or a batch) failed and is being retried: its keys wait behind it."""
        if not self._keyed:
            return
        if isinstance(held, Start):
            self.blocked.update(self._units[held.token][0])
        else:
            self.blocked.add(held[1])

    def pause(self) -> None:
        """An outage: start nothing new until ``resume`` (units in flight carry on)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    # -- what to do ----------------------------------------------------------------------------

    def next(self) -> Held | None:
        """One entry that may start now, as a unit of its own, marked in flight; None if none
        may (``concurrency`` in flight, paused, or every waiting entry's key is busy)."""
        if self.paused or self.running >= self.concurrency:
            return None
        if self._ready:
            self.running += 1
            return self._unpark(self._ready.popleft())
        queue = self._queue
        if not self._keyed:
            if not queue:
                return None
            self.running += 1
            return queue.popleft()
        busy = self._busy
        while queue:
            held = queue.popleft()
            key = held[1]
            if key in busy:
                self._park(key, held)
                continue
            busy[key] = None
            self.running += 1
            return held
        return None

    def may_start_now(self, key: Hashable) -> bool:
        """Would an entry of ``key`` arriving now be the next to start (``next`` would hand it
        out at once)? Nothing waits before it, there is room, no outage, its key is free. The
        carrier may then run it at once without ``arrive``: if its handler returns at once it
        never enters the rule; if not, ``start_now`` marks it in flight."""
        free = self.lanes_if_free()
        return free is None or (free is not False and key not in free)

    def lanes_if_free(self) -> dict[Hashable, Any] | Literal[False] | None:
        """``may_start_now`` for a run of arrivals at once (the eager path asks once per read):
        False if none may start now (paused, entries waiting, no room: with ``PARTITION`` its
        one lane is busy only with a unit in flight or reserved); else the busy keys to look
        each arrival's key up in (``KEY``: not in them, it may start), or None if any may. It
        holds until something enters the rule or starts (``arrive``, ``start_now``)."""
        if self.paused or self._queue or self._ready or self.running >= self.concurrency:
            return False
        return self._busy if self.ordering is Ordering.KEY else None

    def start_now(self, held: Held) -> Held:
        """``held`` (an arrival ``may_start_now`` allowed, not ``arrive``d) is in flight from
        now on, as if ``next`` had handed it out; what to pass to ``done``/``step``/``block``."""
        if self.ordering is Ordering.PARTITION:
            held = (held[0], _ONE_LANE, held[2], held[3])
        if self._keyed:
            self._busy[held[1]] = None
        self.running += 1
        return held

    def take(self, limit: int) -> list[Held]:
        """Up to ``limit`` entries that may start now (``next`` each)."""
        out: list[Held] = []
        while len(out) < limit:
            held = self.next()
            if held is None:
                break
            out.append(held)
        return out

    def start(self, now: float = 0.0) -> Start | None:
        """The next batch (up to ``unit`` entries; with ``KEY`` no key in two batches in
        flight) that may start now, marked in flight; None if none may start now.

        With ``fill``: a batch that is not full fills instead (``fill_deadline``); each call
        adds what may join it (``now``: the caller's clock, in seconds), and returns it once it
        is full or due. Paused (an outage, a stop): None, and the batch that fills stays."""
        if self.paused:
            return None
        batch = self._filling
        if batch is None:
            if not self.startable():
                return None
            batch = _Filling(now + self.fill)
            self._filling = batch
            self.running += 1  # its place among the ``concurrency``: its keys are held
        self._gather(batch)
        entries = batch.entries
        if len(entries) < self.unit and now < batch.due:
            return None
        self._filling = None
        if batch.unsorted:
            entries.sort(key=_arrival)
        token = self._next_token
        self._next_token = token + 1
        self._units[token] = (batch.keys, entries)
        self._batched += len(entries)
        return Start(token, entries)

    def _gather(self, batch: _Filling) -> None:
        """Add to ``batch`` what may join it, up to ``unit``: parked lanes whose key was freed
        first (older than the queue), then the queue (with ``KEY``: its own keys' entries,
        and keys no other unit holds, which it holds from now on)."""
        entries, keys, mine = batch.entries, batch.keys, batch.mine
        queue, busy, ready = self._queue, self._busy, self._ready
        unit = self.unit
        while ready and len(entries) < unit:
            key = ready.popleft()
            if entries:
                batch.unsorted = True  # older than what the batch holds: sort it at the start
            keys.append(key)
            mine.add(key)
            entries.append(self._unpark(key))
            while busy[key] is not None and len(entries) < unit:
                entries.append(self._unpark(key))
            # (a lane the batch could not take whole goes on when the batch is over)
        while queue and len(entries) < unit:
            held = queue.popleft()
            if self._keyed:
                key = held[1]
                if key in busy:
                    if key in mine and busy[key] is None:
                        entries.append(held)  # this batch holds the key: it joins, in order
                    else:
                        self._park(key, held)
                    continue
                busy[key] = None
                mine.add(key)
                keys.append(key)
            entries.append(held)

    def startable(self) -> bool:
        """Would ``next``/``take``/``start`` hand out a unit now (or open a batch to fill)?
        False while a batch fills: what may start joins it."""
        if self.paused or self.running >= self.concurrency or self._filling is not None:
            return False
        if self._ready:
            return True
        queue = self._queue
        if self._keyed:
            busy = self._busy
            while queue and queue[0][1] in busy:  # park what cannot start (once each)
                held = queue.popleft()
                self._park(held[1], held)
        return bool(queue)

    def want(self, read: int) -> int:
        """How many new entries to read now: ``read`` while at most ``concurrency * unit``
        are held, the batch that fills included (so never more than that plus one read),
        else 0."""
        return read if self.held <= self.concurrency * self.unit else 0

    # -- lanes ---------------------------------------------------------------------------------

    def _park(self, key: Hashable, held: Held) -> None:
        """``held`` waits behind its busy key, in stream order."""
        lane = self._busy[key]
        if lane is None:
            self._busy[key] = deque((held,))
        else:
            lane.append(held)
        self._parked += 1

    def _unpark(self, key: Hashable) -> Held:
        """The oldest parked entry of ``key`` (which stays busy: the entry starts now)."""
        lane = self._busy[key]
        assert lane is not None
        held = lane.popleft()
        if not lane:
            self._busy[key] = None
        self._parked -= 1
        return held


def _arrival(held: Held) -> tuple[int, int]:
    ms, _, seq = held[0].partition(b"-")
    return int(ms), int(seq or 0)
