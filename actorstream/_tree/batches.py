"""The batch form of a partition actor (``@system.actor(stream, batch=True)``).

Functions of the actor (like ``events.Events`` for the iterator form), kept apart so the
partition module stays readable. Handling the batch (one handler call, middleware, timeout,
retries, error hook; on a failure its events one at a time, contained) is
``handling.Handling.process_batch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .._transport import Connection
from .supervisor import ChildContext

if TYPE_CHECKING:
    from .partition import PartitionActor

__all__ = ["run_batches"]


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
        await self.handling.process_batch(conn, ctx, entries)
