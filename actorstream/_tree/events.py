"""The iterator form: ``async for event in events`` (and ``events.take(n, within=s)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from .._core.errors import DecodeError
from .._transport import Connection
from .supervisor import ChildContext

if TYPE_CHECKING:
    from .partition import PartitionActor

__all__ = ["Events"]


class Events:
    """The iterator form: ``async for event in events`` (and ``events.take(n, within=s)``).

    An event counts as handled when the loop asks for the next one (or ends normally), so a
    crash in the loop body redelivers that event first: the iterator starts with the actor's
    own pending entries (one at a time, with Redis's delivery counts; one delivered more than
    ``max_deliveries`` times is dead-lettered instead), then reads new ones.
    """

    def __init__(self, actor: PartitionActor, conn: Connection, ctx: ChildContext) -> None:
        self._actor = actor
        self._conn = conn
        self._ctx = ctx
        self._buffer: list[Any] = []
        self._pos = 0
        self._current: list[bytes] = []
        self._tail: Any = b"0-0"
        self._replay_from: bytes | None = b"0"  # None once our pending entries are done

    @property
    def partition(self) -> int:
        return self._actor.partition

    def current_id(self) -> bytes | None:
        """The entry id of the event the loop body holds (None between events)."""
        return self._current[-1] if self._current else None

    def done_with_current(self) -> None:
        if self._current:
            self._actor.link.acks.extend(self._current)
            self._actor.counters.processed += len(self._current)
            self._current = []

    async def _next(self, wait: bool = True) -> Any:
        actor = self._actor
        while True:
            while self._pos < len(self._buffer):
                entry_id, fields = self._buffer[self._pos]
                self._pos += 1
                try:
                    event = actor.decode(fields)
                except DecodeError as exc:
                    await actor.handling.undecodable(self._conn, entry_id, fields, exc, 1)
                    continue
                actor.fence.check(trio.current_time())
                self._current.append(entry_id)
                return event
            if self._ctx.stop_requested:
                raise StopAsyncIteration
            if self._replay_from is not None:
                self._buffer = await self._replay_one()
                self._pos = 0
                continue
            if not wait:
                count = actor.settings.batch_size
                read = await actor.link.read(self._conn, ">", count)
                if not read.entries:
                    self._tail = read.tail
                    return _NOTHING
                self._buffer = read.entries
            else:
                entries = await actor._next_entries(self._conn, self._ctx)
                if entries is None:
                    raise StopAsyncIteration
                self._buffer = entries
            self._pos = 0

    async def _replay_one(self) -> list[Any]:
        """The next of our own pending entries ([] when it is spent or was dead-lettered)."""
        actor = self._actor
        assert self._replay_from is not None
        read = await actor.link.read(self._conn, self._replay_from, 1)
        if read.last is None:
            self._replay_from = None
            return []
        self._replay_from = read.last
        if not read.entries:  # trimmed while pending: the link acked it away
            return []
        entry_id, fields = read.entries[0]
        deliveries = read.deliveries.get(entry_id, 1)
        limit = actor.settings.max_deliveries
        if deliveries > limit:
            counters = actor.counters
            await actor.handling.dead_letter(
                self._conn, entry_id, fields, "max_deliveries",
                f"delivered {deliveries} times (max_deliveries={limit}); "
                f"last error: {counters.last_error}", counters.last_trace, deliveries,
            )
            return []
        return list(read.entries)

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> Any:
        self.done_with_current()
        return await self._next()

    async def take(self, n: int, *, within: float) -> AsyncIterator[list[Any]]:
        """Yield lists of up to ``n`` events, each list closed after ``within`` seconds."""
        if n < 1 or within < 0:
            raise ValueError("take(n, within=...) needs n >= 1 and within >= 0")
        while True:
            self.done_with_current()
            try:
                first = await self._next()
            except StopAsyncIteration:
                return
            batch = [first]
            deadline = trio.current_time() + within
            while len(batch) < n and trio.current_time() < deadline:
                item = await self._next(wait=False)
                if item is _NOTHING:
                    remaining = deadline - trio.current_time()
                    if remaining <= 0:
                        break
                    await self._actor.link.block_briefly(self._conn, self._tail, remaining)
                    continue
                batch.append(item)
            yield batch


_NOTHING: Any = object()
