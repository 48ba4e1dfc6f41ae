"""Punctuators at run time: one partition actor's per-partition timers.

A tick runs inside the partition actor, so only the lease holder runs it, once per partition
and tick. It runs at two points of the one-at-a-time event loop, never beside a handler:

- before an event is handled (``wrap`` around ``Handling.handle``): the event's time moves the
  partition's stream time, and a stream-time tick it crosses runs first, so the tick sees the
  state of every event before it; a wall-clock tick that is due runs there too, so a busy
  partition keeps its wall-clock ticks;
- when the partition is idle (``on_idle``, before the reader waits for appends): wall-clock
  ticks, and the wait is cut short at the next one.

Each call runs in a table scope of its own (``PartitionTables.wrap``, as a handler): its table
changes and, under ``processing="exactly_once"``, the events it sends are held; when it returns
they join the partition's pending commit together with the new mark, in one step, so the next
fenced transaction commits all of it or none. A failing call leaves nothing and is contained
like a failing handler: counted and logged (``Handling.note_failure``), then retried with the
partition backing off under the containment policy (``PartitionFailures``), its lease kept,
until it succeeds or a stop is requested; the event it ran before is neither handled nor
spent meanwhile, and stays pending.

The marks live in one hash per (actor, partition) beside the partition (same slot), loaded
when the actor takes the lease, after its tables: Redis is the truth.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._core import keys
from .._core.failures import ErrorClass
from .._core.fence import Fence
from .._core.punctuation import PunctuatorSpec, due
from .._scope import PartitionTables
from .._transport import Connection
from .counters import Counters, PartitionState
from .handling import STOPPED, Handle, Handling
from .supervisor import ChildContext

__all__ = ["PartitionPunctuators", "idle_hooks"]

Idle = Callable[[], Awaitable[float | None]]


class PartitionPunctuators:
    """The punctuators of one partition actor (created with it, for one lease epoch)."""

    #: The wall clock, in epoch seconds (tests may replace it).
    wall_clock: Callable[[], float] = staticmethod(time.time)

    def __init__(
        self, *, app: str, spec: Any, partition: int, tables: PartitionTables, fence: Fence,
        counters: Counters,
    ) -> None:
        self.specs: tuple[PunctuatorSpec, ...] = spec.punctuators
        self.partition = partition
        self.tables = tables
        self.fence = fence
        self.counters = counters
        self.timeout: float | None = spec.settings.timeout
        self.time_of = spec.stream.event_time_ms
        self.hash_key = keys.punctuators_key(app, spec.stream.name, partition, spec.name)
        self.streams = tuple(p for p in self.specs if p.clock == "stream")
        self.walls = tuple(p for p in self.specs if p.clock == "wall")
        self.marks: dict[str, int | None] = {}
        self.handling: Handling | None = None
        self.ctx: ChildContext | None = None

    async def start(self, conn: Connection, ctx: ChildContext, handling: Handling) -> None:
        """A session begins (after the tables were loaded): load the committed marks, and put
        the ticks before each event's handling (once per actor)."""
        self.fence.check(trio.current_time())
        flat = await conn.execute("HGETALL", self.hash_key)
        stored = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        self.marks = {p.name: stored.get(p.name) for p in self.specs}
        self.ctx = ctx
        if self.handling is None:
            self.handling = handling
            handling.handle = self.wrap(handling.handle)

    def wrap(self, handle: Handle) -> Handle:
        streams, walls, time_of = self.streams, self.walls, self.time_of

        async def with_ticks(conn: Connection, entry_id: bytes, fields: list[bytes],
                             event: Any) -> object:  # fmt: skip
            if streams:
                t_ms = time_of(event, entry_id)
                for spec in streams:
                    if not await self._reach(spec, t_ms):
                        return STOPPED
            if walls:
                now_ms = self._wall_ms()
                for spec in walls:
                    if not await self._reach(spec, now_ms):
                        return STOPPED
            return await handle(conn, entry_id, fields, event)

        return with_ticks

    async def on_idle(self) -> float | None:
        """Run the wall-clock ticks that are due; the seconds until the next one."""
        if not self.walls or self.handling is None:
            return None
        self.fence.check(trio.current_time())
        now_ms = self._wall_ms()
        for spec in self.walls:
            if not await self._reach(spec, now_ms):
                return None
        now_ms = self._wall_ms()
        marks = self.marks
        waits = [
            (mark + p.every_ms - now_ms) / 1000
            for p in self.walls
            if (mark := marks.get(p.name)) is not None
        ]
        return max(0.001, min(waits)) if waits else None

    def _wall_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    async def _reach(self, spec: PunctuatorSpec, now_ms: int) -> bool:
        """Move ``spec``'s clock to ``now_ms``, firing the tick it crossed; False if a stop was
        requested while a failing tick backed off."""
        mark = self.marks.get(spec.name)
        new, fire = due(mark, now_ms, spec.every_ms)
        if new is None:
            return True
        if fire is None:  # the first reading: where this partition's ticks start
            self._keep(spec, new)
            return True
        assert mark is not None
        return await self._fire_contained(spec, fire, mark)

    def _keep(self, spec: PunctuatorSpec, mark: int) -> None:
        """The new mark, straight into the pending commit (with what the tick did, if any: no
        await between them, so no round trip can take one without the other)."""
        self.marks[spec.name] = mark
        writes = self.tables.pending.writes
        held = writes.get(self.hash_key)
        if held is None:
            held = writes[self.hash_key] = {}
        held[spec.name] = str(mark).encode()

    async def _fire(self, spec: PunctuatorSpec, fire: int, mark: int) -> None:
        tick = spec.tick(fire, mark, self.partition)
        timeout = self.timeout

        async def call() -> None:
            if timeout is None:
                await spec.fn(tick)
                return
            try:
                with trio.fail_after(timeout):
                    await spec.fn(tick)
            except trio.TooSlowError:
                raise TimeoutError(f"punctuator took longer than timeout={timeout:g}s") from None

        await self.tables.wrap(call)()
        self._keep(spec, fire)

    async def _fire_contained(self, spec: PunctuatorSpec, fire: int, mark: int) -> bool:
        handling, ctx = self.handling, self.ctx
        assert handling is not None and ctx is not None
        counters = self.counters
        failures = counters.failures
        state = counters.state
        if state is PartitionState.BACKING_OFF:
            state = PartitionState.RUNNING
        label = f"punctuator {spec.name} at {fire / 1000:.3f}".encode()
        while True:
            try:
                await self._fire(spec, fire, mark)
            except Exception as exc:
                handling.note_failure(exc, label, 0, trace=False)
                decision = failures.on_failure(label, 1, ErrorClass.TRANSIENT)
                if not await handling._back_off(ctx, decision.delay, "punctuator failing"):
                    return False
                self.fence.check(trio.current_time())
                continue
            counters.ticks += 1
            if failures.failing == label:
                failures.on_success()
                counters.state = state
            return True


def idle_hooks(*hooks: Idle | None) -> Idle | None:
    """One idle hook calling each of ``hooks``: the soonest wake-up any of them asks for."""
    present = [h for h in hooks if h is not None]
    if len(present) <= 1:
        return present[0] if present else None

    async def each() -> float | None:
        waits = [w for h in present if (w := await h()) is not None]
        return min(waits) if waits else None

    return each
