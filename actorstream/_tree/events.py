"""The iterator form: ``async for event in events`` (and ``events.take(n, within=s)``).

Its handler owns its loop, so the loop here only restarts it: a handler that raises ends the
partition actor (``HandlerCrashed``), and ``partitions`` restarts it under the partition's own
restart budget; replay then delivers the failing event first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.errors import DecodeError, FencedError
from .counters import Counters
from .handling import Handling
from .reader import Reader

__all__ = ["Events", "HandlerCrashed", "IteratorLoop"]


class HandlerCrashed(Exception):
    """The iterator form's handler (which owns its loop) raised: its partition actor restarts."""


class IteratorLoop:
    """Call the handler with an ``Events`` iterator until a graceful stop."""

    def __init__(self, reader: Reader, handling: Handling, counters: Counters) -> None:
        self.reader = reader
        self.handling = handling
        self.counters = counters

    async def replay(self) -> None:
        """Nothing here: the iterator replays our pending entries itself, first."""

    async def run(self) -> None:
        events = Events(self.reader, self.handling, self.counters)
        handler = self.handling.spec.handler
        while not self.reader.ctx.stop_requested:
            try:
                await handler(events)
            except (FencedError, *TRANSIENT_REDIS_ERRORS):
                raise  # ours, from inside the iterator
            except Exception as exc:
                self.counters.errors[type(exc).__name__] += 1
                # The loop's state is gone with it: restart the actor (``partitions`` does,
                # under this partition's own budget); replay delivers this event first.
                self.handling.note_failure(exc, events.current_id() or b"?", 0)
                raise HandlerCrashed(describe_error(exc)) from exc
            events.done_with_current()


class Events:
    """The iterator form: ``async for event in events`` (and ``events.take(n, within=s)``).

    An event counts as handled when the loop asks for the next one (or ends normally), so a
    crash in the loop body redelivers that event first: the iterator starts with the actor's
    own pending entries (one at a time, with Redis's delivery counts; one delivered more than
    ``max_deliveries`` times is dead-lettered instead), then reads new ones.
    """

    def __init__(self, reader: Reader, handling: Handling, counters: Counters) -> None:
        self._reader = reader
        self._handling = handling
        self._counters = counters
        self._conn = reader.conn
        self._ctx = reader.ctx
        self._buffer: list[Any] = []
        self._pos = 0
        self._current: list[bytes] = []
        self._tail: Any = b"0-0"
        self._replay_from: bytes | None = b"0"  # None once our pending entries are done

    @property
    def partition(self) -> int:
        return self._handling.partition

    def current_id(self) -> bytes | None:
        """The entry id of the event the loop body holds (None between events)."""
        return self._current[-1] if self._current else None

    def done_with_current(self) -> None:
        if self._current:
            self._reader.commit(self._current)
            self._counters.processed += len(self._current)
            self._current = []

    async def _next(self, wait: bool = True) -> Any:
        handling = self._handling
        reader = self._reader
        while True:
            while self._pos < len(self._buffer):
                entry_id, fields = self._buffer[self._pos]
                self._pos += 1
                try:
                    event = handling.decode(fields)
                except DecodeError as exc:
                    await handling.undecodable(self._conn, entry_id, fields, exc, 1)
                    continue
                handling.fence.check(trio.current_time())
                self._current.append(entry_id)
                return event
            if self._ctx.stop_requested:
                raise StopAsyncIteration
            if self._replay_from is not None:
                self._buffer = await self._replay_one()
                self._pos = 0
                continue
            if not wait:
                read = await reader.read_new(reader.batch_size)
                if not read.entries:
                    self._tail = read.tail
                    return _NOTHING
                self._buffer = read.entries
            else:
                entries = await reader.next_entries()
                if entries is None:
                    raise StopAsyncIteration
                self._buffer = entries
            self._pos = 0

    async def _replay_one(self) -> list[Any]:
        """The next of our own pending entries ([] when it is spent or was dead-lettered)."""
        handling = self._handling
        assert self._replay_from is not None
        read = await self._reader.replay_one(self._replay_from)
        if read.last is None:
            self._replay_from = None
            return []
        self._replay_from = read.last
        if not read.entries:  # trimmed while pending: the link acked it away
            return []
        entry_id, fields = read.entries[0]
        deliveries = read.deliveries.get(entry_id, 1)
        limit = handling.settings.max_deliveries
        if deliveries > limit:
            counters = self._counters
            await handling.dead_letter(
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
                    await self._reader.linger(self._tail, remaining)
                    continue
                batch.append(item)
            yield batch


_NOTHING: Any = object()
