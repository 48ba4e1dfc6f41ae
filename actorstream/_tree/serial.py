"""The event form, one event at a time (``ordering="partition"``, the default).

A read batch is handled in stream order by ``Handling.process`` (its plain hot path when the
handler has no timeout, retries, middleware or error hook); its acks ride on the next read.
This is the dispatch rule with one lane and one unit in flight, kept as a loop of its own
because it is the hot path: no lane bookkeeping per event (docs/design.md, "Events in flight").
"""

from __future__ import annotations

from .reader import PendingFirst

__all__ = ["SerialLoop"]


class SerialLoop(PendingFirst):
    """Read a batch, handle it in order, ack it with the next read."""

    async def run(self) -> None:
        reader = self.reader
        ctx = reader.ctx
        process = self.handling.process
        counters = self.counters
        while not ctx.stop_requested:
            entries = await reader.next_entries()
            if entries is None:
                return
            counters.in_flight = 1
            try:
                await process(reader.conn, ctx, entries)
            finally:
                counters.in_flight = 0
