"""What a form loop sees of its partition: the entries to handle, and where handled ids go.

Every handler form (``serial``, ``lanes``, ``batches``, ``events``) is one loop over this small
interface, so a new form or ordering is one module and none reaches into the partition actor:

- ``next_entries`` / ``read_new``: new entries, by a fenced round trip that also commits what
  was handled (``commit`` puts ids in; ``PartitionLink.acks`` is the buffer);
- ``replay_one``: our own pending entries, one at a time, with Redis's delivery counts;
- ``wait_for_append`` / ``linger``: wait for the partition to grow (interruptible by a stop
  only when nothing is in hand, since a cancelled request closes the connection).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .._core.protocol import ReadResult
from .._transport import Connection
from .link import ACK_WAIT_MS, PartitionLink
from .supervisor import ChildContext

if TYPE_CHECKING:
    from .counters import Counters
    from .handling import Handling

__all__ = ["WAIT_BLOCK_MS", "FormLoop", "PendingFirst", "Reader"]

#: The longest wait for an append when the partition is idle (side-effect free XREAD BLOCK).
WAIT_BLOCK_MS = 2000


class Reader:
    """The fenced entries of one partition actor's session (one connection, one epoch)."""

    __slots__ = ("_tail", "_woken", "batch_size", "conn", "ctx", "link", "on_idle")

    def __init__(
        self,
        link: PartitionLink,
        conn: Connection,
        ctx: ChildContext,
        batch_size: int,
        on_idle: Callable[[], Awaitable[float | None]] | None = None,
    ) -> None:
        self.link = link
        self.conn = conn
        self.ctx = ctx
        self.batch_size = batch_size
        #: Called when a read found nothing new, before a long wait (windowed tables with
        #: ``idle=``: stream time may move on when quiet; wall-clock punctuators); returns
        #: the seconds until it needs calling again, or None.
        self.on_idle = on_idle
        #: What a wait for an append read with the wake (one round trip): the next read's.
        self._woken: ReadResult | None = None
        #: The last new entry read in this session: a wait for the next one may start there.
        self._tail: bytes | None = None

    @property
    def writes_pending(self) -> bool:
        """Table writes or held outputs waiting for the next round trip?"""
        tables = self.link.tables
        return tables is not None and bool(tables.pending)

    @property
    def uncommitted(self) -> bool:
        """Is anything waiting for the next round trip (acks, table writes, outputs)?"""
        return bool(self.link.acks) or self.writes_pending

    def commit(self, ids: Iterable[bytes]) -> None:
        """Handled ids: acked by the next fenced round trip (never a round trip of their own)."""
        self.link.acks.extend(ids)

    async def read_new(self, count: int) -> ReadResult:
        """Commit what is handled and read up to ``count`` new entries (one round trip).

        Right after a wait for an append (``wait_for_append``, ``linger``): what it read with
        the wake, without a round trip (at most ``count`` of them; the rest comes next).
        """
        woken = self._woken
        if woken is not None:
            self._woken = None
            entries = woken.entries
            if len(entries) > count:
                self._woken = woken._replace(entries=entries[count:])
                return woken._replace(entries=entries[:count])
            if entries or not self.uncommitted:
                return woken
        read = await self.link.read(self.conn, ">", count)
        if read.entries:
            self._tail = read.entries[-1][0]
        return read

    async def next_entries(self, count: int | None = None) -> list[Any] | None:
        """The next batch of new entries, waiting when the partition is empty.

        Handled entries to ack ride on a short wait for the next append (one round trip per
        wake, not two). Returns None when a graceful stop was requested while waiting
        (nothing is in hand then: a stop interrupts a long wait by closing the connection).
        """
        count = count or self.batch_size
        ctx = self.ctx
        if (
            self._tail is not None and self.on_idle is None and self.link.acks
            and not self.writes_pending
        ):
            await self.linger(self._tail, ACK_WAIT_MS / 1000)
        while True:
            read = await self.read_new(count)
            if read.entries:
                return read.entries
            if ctx.stop_requested:
                return None
            if not await self.wait_for_append(read.tail):
                return None

    async def wait_for_append(self, tail: Any, block_ms: int = WAIT_BLOCK_MS) -> bool:
        """Wait for an append after ``tail``; False if a stop was requested meanwhile."""
        if self.on_idle is not None:
            wake = await self.on_idle()
            if self.writes_pending:  # what it did is committed by the next read, at once
                return not self.ctx.stop_requested
            if wake is not None:
                block_ms = max(1, min(block_ms, math.ceil(wake * 1000)))
        woken = await self.link.wait_and_read(self.conn, self.ctx, tail, block_ms, self.batch_size)
        if woken is None:
            if self.ctx.stop_requested:
                return False
            return await self.link.wait_for_append(self.conn, self.ctx, tail, block_ms)
        self._woke(woken)
        return bool(woken.entries) or not self.ctx.stop_requested

    async def linger(self, tail: Any, seconds: float) -> None:
        """Wait up to ``seconds`` for an append after ``tail``, not interrupted by a stop; the
        acks in hand ride on the read that follows the wake, in the same round trip."""
        if self._woken is not None and self._woken.entries:
            return  # entries in hand already
        ms = max(1, int(seconds * 1000))
        woken = await self.link.linger_and_read(self.conn, tail, ms, self.batch_size)
        if woken is None:
            await self.link.block_briefly(self.conn, tail, seconds)
        else:
            self._woke(woken)

    def _woke(self, woken: ReadResult) -> None:
        self._woken = woken
        if woken.entries:
            self._tail = woken.entries[-1][0]

    async def replay_one(self, start: bytes | str) -> ReadResult:
        """Our next pending entry after ``start``, with its delivery count.

        One entry at a time: reading from history bumps the delivery count of every entry
        returned, and the ones behind a poison event must not be charged for its failures.
        (Entries trimmed while pending are acked away by the link, and left out.)
        """
        return await self.link.read(self.conn, start, 1)

    async def flush(self) -> None:
        await self.link.flush_acks(self.conn)


async def replay_own_pending(reader: Reader, handling: Handling) -> None:
    """Handle our own pending entries in id order, before anything new (one at a time)."""
    start: bytes = b"0"
    ctx = reader.ctx
    while not ctx.stop_requested:
        read = await reader.replay_one(start)
        if read.last is None:
            return
        start = read.last
        await handling.process(reader.conn, ctx, read.entries, read.deliveries)


class FormLoop(Protocol):
    """One handler form's loop over a ``Reader`` (``partition`` picks it from the spec)."""

    async def replay(self) -> None:
        """Handle our own pending entries first (the iterator form does it in its loop)."""

    async def run(self) -> None:
        """Handle new entries until a graceful stop; leave nothing handled uncommitted."""


class PendingFirst:
    """A form loop that replays our own pending entries, one at a time, before anything new:
    the serial and the batch forms'."""

    def __init__(self, reader: Reader, handling: Handling, counters: Counters) -> None:
        self.reader = reader
        self.handling = handling
        self.counters = counters

    async def replay(self) -> None:
        await replay_own_pending(self.reader, self.handling)
