"""The batch form of a partition actor (``@system.actor(stream, batch=True)``).

Functions of the actor (like ``events.Events`` for the iterator form), kept apart so the
partition module stays readable: one handler call per batch, with the actor's middleware,
timeout, retries and error hook; a failure crashes the actor and redelivers the whole batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .._core.classify import describe_error, format_traceback
from .._core.errors import DecodeError
from .._middleware import Outcome
from .._transport import Connection
from .supervisor import ChildContext

if TYPE_CHECKING:
    from .partition import PartitionActor

__all__ = ["handle_batch", "run_batches"]


async def run_batches(self: PartitionActor, conn: Connection, ctx: ChildContext) -> None:
    """The batch form's loop: fill a batch (up to ``batch_size``, waiting ``batch_wait``)."""
    wait = self.settings.batch_wait
    size = self.settings.batch_size
    while not ctx.stop_requested:
        entries = await self._next_entries(conn, ctx)
        if entries is None:
            return
        if wait > 0 and len(entries) < size:
            deadline = trio.current_time() + wait
            while len(entries) < size and not ctx.stop_requested:
                remaining = deadline - trio.current_time()
                if remaining <= 0:
                    break
                more = await self.link.read(conn, ">", size - len(entries))
                if more.entries:
                    entries.extend(more.entries)
                    continue
                await self.link.block_briefly(conn, more.tail, remaining)
        await handle_batch(self, conn, entries, deliveries=1)

async def handle_batch(
    self: PartitionActor, conn: Connection, entries: list[Any], *, deliveries: int
) -> None:
    """One handler call for the decodable entries; undecodable ones are dead-lettered."""
    events: list[Any] = []
    ids: list[bytes] = []
    for entry_id, fields in entries:
        try:
            events.append(self.decode(fields))
            ids.append(entry_id)
        except DecodeError as exc:
            await self._dead_letter(
                conn, entry_id, fields, f"decode:{exc.kind}", str(exc), None, deliveries
            )
    if not events:
        return
    self.fence.check(trio.current_time())
    info = self._info(ids[0])
    chain = self.chain
    started = trio.current_time()
    try:
        await self._call(lambda evs: chain(evs, info), events)
        self.counters.latencies.append(trio.current_time() - started)
    except Exception as exc:
        self._failing = ids[0]
        hook = self.spec.on_error
        if hook is None:
            raise
        outcome = await hook(events, exc, info)
        if outcome is Outcome.DEAD_LETTER:
            by_id = dict(entries)
            for entry_id in ids:
                await self._dead_letter(
                    conn, entry_id, by_id[entry_id], "handler", describe_error(exc),
                    format_traceback(exc), deliveries,
                )
            return
        if outcome is not Outcome.SKIP:
            raise
        self.link.acks.extend(ids)
        return
    self.link.acks.extend(ids)
    self.counters.processed += len(events)
