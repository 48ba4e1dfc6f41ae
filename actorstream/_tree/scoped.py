"""The plain hot path of an actor with tables, one event at a time (``ordering="partition"``).

``Handling._process_plain`` calls the handler wrapped by ``PartitionTables.wrap``: one more
coroutine per event, which makes the event scope current and resets it. Here the scope is made
current once per batch (``PartitionTables.enter``) and the bare handler called; after each call
that returned its changes are kept (``keep``), after one that raised they are undone and the
scope left (``leave``) before the containment runs the event again through the wrapped chain,
as ``Handling`` does for any failure; then the scope is entered again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._core.errors import DecodeError
from .._scope import PartitionTables
from .._transport import Connection
from .counters import SAMPLE_EVERY
from .handling import FENCE_CHECK_EVERY, MOVED, STOPPED, Handling
from .supervisor import ChildContext

__all__ = ["ScopedHandling"]


class ScopedHandling(Handling):
    """``Handling`` whose plain loop holds its partition's table scope for a batch."""

    def __init__(
        self, *, tables: PartitionTables, bare: Callable[[Any], Awaitable[Any]], **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.tables = tables
        self.bare = bare  # the handler without ``PartitionTables.wrap``

    async def _process_plain(
        self, conn: Connection, ctx: ChildContext, entries: list[Any]
    ) -> None:
        tables = self.tables
        entered = tables.enter()
        if entered is None:  # the scope is in use: the wrapped handler, one scope per call
            await super()._process_plain(conn, ctx, entries)
            return
        scope = entered[0]
        keep, handler, decode, fence = tables.keep, self.bare, self.decode, self.fence
        counters = self.counters
        failures = counters.failures
        stopping, ack = ctx.stop_event.is_set, self.link.acks.append
        streak, done, sampled = failures.streak, 0, counters.processed
        try:
            for entry_id, fields in entries:
                if stopping():
                    return
                if not done % FENCE_CHECK_EVERY:
                    fence.check(trio.current_time())
                try:
                    event = decode(fields)
                except DecodeError as exc:
                    await self.undecodable(conn, entry_id, fields, exc, 1)
                    continue
                try:
                    if (sampled + done) % SAMPLE_EVERY:  # (counted across reads)
                        await handler(event)
                    else:
                        started = trio.current_time()
                        await handler(event)
                        counters.latencies.append(trio.current_time() - started)
                    if scope.journal or scope.undo or scope.outputs:
                        keep(scope)  # a value the table cannot store raises here
                except Exception as exc:
                    tables.leave(entered)  # what the call changed is undone
                    counters.errors[type(exc).__name__] += 1
                    counters.processed += done  # ours before the failure: evidence for others
                    failures.board.record_successes(done)
                    done = 0
                    result = await self.contain(
                        conn, ctx, entry_id, fields, exc, 1, self._handle_one
                    )
                    again = tables.enter()
                    assert again is not None  # the containment gave the scope back
                    entered = again
                    if result is STOPPED:
                        return
                    streak = failures.streak
                    if result is MOVED:
                        continue
                if streak:
                    failures.on_success()
                    streak = 0
                ack(entry_id)
                done += 1
        finally:
            tables.leave(entered)
            counters.processed += done
            failures.board.record_successes(done)
