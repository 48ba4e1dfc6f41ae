"""The batch form (``@system.actor(stream, batch=True)``), one batch at a time.

Fill a batch (up to ``batch_size``, waiting up to ``batch_wait`` when idle), hand it to the
handler in one call (middleware, timeout, retries, error hook), ack it with the next read.
When the call fails and ``on_error`` does not settle it, which event failed is unknown: its
events are handled again one at a time, as batches of one, and the failing one meets the
containment rule. ``handle_batch`` is shared with ``lanebatches`` (batches in flight).
"""

from __future__ import annotations

from typing import Any

import trio

from .._core.crashes import describe_error, format_bounded_traceback
from .._core.errors import DecodeError
from .._middleware import Outcome
from .._transport import Connection
from .handling import Handling
from .reader import PendingFirst
from .supervisor import ChildContext

__all__ = ["BatchLoop", "Item", "decode_all", "handle_batch"]

#: The longest single wait for an append while a batch fills (a stop is noticed between two:
#: the wait itself is not interrupted, since a cancelled request closes the connection).
FILL_SLICE = 0.1

#: An entry ready for a handler: (entry id, fields, decoded event).
Item = tuple[bytes, list[bytes], Any]


class BatchLoop(PendingFirst):
    """The batch form with ``ordering="partition"``: one batch in flight."""

    async def run(self) -> None:
        reader = self.reader
        ctx = reader.ctx
        handling = self.handling
        while not ctx.stop_requested:
            entries = await reader.next_entries()
            if entries is None:
                return
            await self._fill(entries)
            items = await decode_all(handling, reader.conn, entries)
            if not items:
                continue
            self.counters.in_flight = len(items)
            try:
                reader.commit(await handle_batch(handling, reader.conn, ctx, items))
            finally:
                self.counters.in_flight = 0

    async def _fill(self, entries: list[Any]) -> None:
        """Wait up to ``batch_wait`` for more entries while the batch is not full (a stop
        ends the wait within ``FILL_SLICE``: the batch in hand is handled as it is)."""
        settings = self.handling.settings
        wait, size = settings.batch_wait, settings.batch_size
        if wait <= 0 or len(entries) >= size:
            return
        reader = self.reader
        deadline = trio.current_time() + wait
        while len(entries) < size and not reader.ctx.stop_requested:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                return
            more = await reader.read_new(size - len(entries))
            if more.entries:
                entries.extend(more.entries)
                continue
            await reader.linger(more.tail, min(remaining, FILL_SLICE))


async def decode_all(handling: Handling, conn: Connection, entries: list[Any]) -> list[Item]:
    """The decoded entries, in order; the undecodable ones are dead-lettered on the way."""
    items: list[Item] = []
    decode = handling.decode
    for entry_id, fields in entries:
        try:
            items.append((entry_id, fields, decode(fields)))
        except DecodeError as exc:
            await handling.undecodable(conn, entry_id, fields, exc, 1)
    return items


async def handle_batch(
    handling: Handling, conn: Connection, ctx: ChildContext, items: list[Item]
) -> list[bytes]:
    """Hand ``items`` to the batch handler; the ids to ack (its handler returned for them,
    or ``on_error`` chose SKIP). Failures are contained, one event at a time."""
    ids = [entry_id for entry_id, _, _ in items]
    acks: list[bytes] = []
    if len(items) == 1:
        await handling.process(conn, ctx, [(ids[0], items[0][1])], {}, ack=acks.append)
        return acks
    events = [event for _, _, event in items]
    handling.fence.check(trio.current_time())
    info = handling.info(ids[0])
    chain = handling.chain
    started = trio.current_time()
    try:
        await handling.call(lambda evs: chain(evs, info), events)
    except Exception as exc:
        hook = handling.spec.on_error
        outcome = None if hook is None else await hook(events, exc, info)
        if outcome is Outcome.DEAD_LETTER:
            for entry_id, fields, _ in items:
                await handling.dead_letter(
                    conn, entry_id, fields, "handler", describe_error(exc),
                    format_bounded_traceback(exc), 1,
                )
            return acks
        if outcome is Outcome.SKIP:
            return ids
        entries = [(entry_id, fields) for entry_id, fields, _ in items]
        await handling.process(conn, ctx, entries, {}, ack=acks.append)
        return acks
    counters = handling.counters
    counters.latencies.append(trio.current_time() - started)
    counters.processed += len(events)
    failures = counters.failures
    failures.board.record_successes(len(events))
    if failures.streak:
        failures.on_success()
    return ids
