"""The fenced Redis side of one partition actor, for one lease epoch.

Every side effect (ack, read into our pending list, claim) is checked against our epoch by
Redis: a Lua script, or a transaction that WATCHes the epoch key. A worker that lost its lease
cannot take or ack anything; even a read is fenced, because an XREADGROUP by a zombie would strand
entries in its pending list. The acks of handled events collect in ``acks`` and ride on the next
round trip (``read``), so there is no Redis round trip per event: ``acks`` is the commit buffer,
what is in it when a round trip is planned is committed by that round trip, fenced.

The connection carries one request at a time, and a partition with events in flight has more
than one task that may need it (the reader, a worker redelivering a failed event): ``lock``
serializes the round trips.

What to send and what the replies mean is decided in ``_core.protocol`` (tested without Redis);
this module sends the commands, keeps which connection watches the epoch, and books results.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from .._core import keys
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.errors import FencedError
from .._core.fence import Fence
from .._core.outbox import Outbox, Replication
from .._core.protocol import PartitionProtocol, ReadResult
from .._scope import PartitionTables
from .._transport import Connection, evalsha_on, pack
from . import scripts
from .context import Report
from .counters import Counters
from .supervisor import ChildContext

__all__ = ["ACK_WAIT_MS", "CLAIM_COUNT", "PartitionLink"]

log = logging.getLogger("actorstream.partition")

T = TypeVar("T")

CLAIM_COUNT = 500
#: The longest a wait for an append may hold acks of handled entries (they ride on the read
#: after it): the wake costs no round trip of its own, and an idle partition's acks wait
#: no longer than this.
ACK_WAIT_MS = 50


class PartitionLink:
    """Carries out the round trips of (actor, partition, epoch) that ``protocol`` plans.

    Holds what the protocol does not: the fence's clock check, which connection watches the
    epoch key, and the pending acks.
    """

    def __init__(
        self,
        *,
        app: str,
        stream: str,
        partition: int,
        group: str,
        consumer: str,
        fence: Fence,
        counters: Counters,
        report: Report,
        packed: bool = False,
    ) -> None:
        # ``packed``: the connection is a plain one (not a Cluster's slot connection, which
        # reads the commands to route them): the read's constant commands go packed once.
        self.protocol = PartitionProtocol(
            app=app, stream=stream, partition=partition, group=group, consumer=consumer,
            epoch=fence.epoch, pack=pack if packed else None,
        )
        self.stream = stream
        self.partition = partition
        self.group = group
        self.consumer = consumer
        self.fence = fence
        self.counters = counters
        self.report = report
        self.stream_key = self.protocol.stream_key
        self.epoch_key = self.protocol.epoch_key
        self.meta_key = keys.meta_key(app, stream, partition)
        #: Ids handled but not yet acked; acked by the next ``read`` (one list for the epoch:
        #: a loop may keep its ``append``).
        self.acks: list[bytes] = []
        self.lock = trio.Lock()
        #: A stateful actor's tables: their pending commit rides with the acks (one unit).
        self.tables: PartitionTables | None = None
        #: After a commit: WAIT for (replicas, milliseconds), or None.
        self.wait: tuple[int, int] | None = None
        #: Exactly-once on a Redis Cluster: routes outputs to other slots through the outbox,
        #: and ``on_outbox`` wakes its forwarder after a commit that put entries there.
        self.outbox: Outbox | None = None
        self.on_outbox: Callable[[], None] | None = None
        #: With ``wait`` and an outbox: which commits the replicas acknowledged (forward gate).
        self.replication: Replication | None = None
        self._watched: Connection | None = None

    async def ensure_group(self, conn: Connection) -> None:
        """Create the consumer group if new; a group that vanished raises GroupLostError."""
        self.fence.check(trio.current_time())
        await evalsha_on(
            conn, scripts.ENSURE_GROUP, [self.stream_key, self.meta_key], [self.group]
        )

    async def read(self, conn: Connection, start: bytes | str, count: int) -> ReadResult:
        """Fenced "ack the previous batch, read the next" in one round trip (see protocol).

        Fencing without a script: the connection WATCHes the epoch key and the transaction's
        EXEC is aborted if the epoch changed. A Lua script did the same but cost Redis twice
        the CPU per event (converting every entry into Lua tables and back); see
        docs/design.md. Raises ``FencedError`` or the Redis error; under OOM the acks still go
        out alone first (backpressure, not lost work).
        """
        await self._acquire()
        try:
            return await self._read(conn, start, count)
        finally:
            self.lock.release()

    async def _acquire(self) -> None:
        """``self.lock``, without a scheduling point of its own when it is free (the usual
        case: the round trip that follows is one; ``async with`` costs a whole one more)."""
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()

    async def _read(self, conn: Connection, start: bytes | str, count: int) -> ReadResult:
        self.fence.check(trio.current_time())
        protocol = self.protocol
        if self._watched is not conn:
            await self._watch(conn)
        tables = self.tables
        if tables is not None and tables.pending:
            return await self._commit_and_read(conn, tables, start, count)
        plan = protocol.plan_read(self.acks, start, count)
        result = protocol.on_read(plan, await conn.pipeline(plan.commands))
        if not result.watching:
            self._watched = None  # the next call re-checks and reports FENCED
        if result.ack_only_retry:
            await self._ack_only(conn)
        result.raise_for_failure()
        self._settle(plan.acks, result)
        return result

    async def _commit_and_read(
        self, conn: Connection, tables: PartitionTables, start: bytes | str, count: int
    ) -> ReadResult:
        """``read`` with the tables' pending commit in the same transaction as the acks.

        Refused as a whole (an error reply, EXECABORT): it is put back and rides again. Its
        outcome unknown (the connection broke): never retried; the next session drops what
        is held and reloads (``PartitionActor``).
        """
        taken = tables.pending.take()
        protocol = self.protocol
        plan = protocol.plan_read(self.acks, start, count, taken.plan(self.outbox), self.wait)
        number = self.replication.send() if self.replication is not None else 0
        result = protocol.on_read(plan, await conn.pipeline(plan.commands))
        if not result.watching:
            self._watched = None
        if result.error is not None and not result.partial:
            tables.pending.restore(taken)
        result.raise_for_failure()
        self.counters.committed += 1
        if number and plan.wait and not any(k == "wait-replicas" for k, _ in result.notices):
            self.replication.confirm(number)  # type: ignore[union-attr]
        if plan.commit is not None and plan.commit.outboxed and self.on_outbox is not None:
            self.on_outbox()
        self._settle(plan.acks, result)
        return result

    async def _watch(self, conn: Connection) -> None:
        protocol = self.protocol
        fenced = protocol.on_watch(await conn.pipeline(protocol.watch_commands()))
        if fenced is not None:
            self._notify(fenced.notices())
            raise fenced.error()
        self._watched = conn

    async def _ack_only(self, conn: Connection) -> None:
        """Under OOM: send the acks alone (XACK is allowed, XREADGROUP is not)."""
        plan = self.protocol.plan_read(self.acks, ">", 0)
        result = self.protocol.on_read(plan, await conn.pipeline(plan.commands))
        if not result.watching:
            self._watched = None
        result.raise_for_failure()
        self._settle(plan.acks, result)

    def _settle(self, acks_sent: int, result: ReadResult) -> None:
        """Book a successful round trip: confirmed acks, notices, trimmed pending entries."""
        if result.notices:
            self._notify(result.notices)
        if acks_sent:
            self.counters.acked += result.acked
            # In place (loops keep its bound ``append``), keeping what was added while the
            # round trip was on its way (the plan copied the ids it sent).
            del self.acks[:acks_sent]
        if result.trimmed:
            # Trimmed or deleted while pending: nothing to handle; ack it away.
            self.counters.trimmed += len(result.trimmed)
            self.acks.extend(result.trimmed)

    def _notify(self, notices: tuple[tuple[str, str], ...]) -> None:
        for kind, message in notices:
            self.report(kind, message)

    async def flush_acks(self, conn: Connection) -> None:
        if self.acks or (self.tables is not None and self.tables.pending):
            await self.read(conn, ">", 0)

    async def flush_acks_after_crash(
        self, conn: Connection, outage: Callable[[], bool] = lambda: False
    ) -> None:
        """Ack what was handled before a crash. ``outage()`` tells whether a Redis outage of
        the worker explains a fence met here (a lease lapsed, or Redis lost it)."""
        if not self.acks and not (self.tables is not None and self.tables.pending):
            return
        with trio.move_on_after(5.0) as scope:
            scope.shield = True
            try:
                await self.flush_acks(conn)
            except (FencedError, *TRANSIENT_REDIS_ERRORS) as exc:
                # Not acked: these are redelivered (at-least-once); say so. Quietly when Redis
                # is or was just unavailable: the worker's one outage line says that already.
                fenced = isinstance(exc, FencedError) and not outage()
                level = logging.WARNING if fenced else logging.INFO
                log.log(
                    level, "%s[%d]: could not ack %d handled event(s) after a crash: %s",
                    self.group, self.partition, len(self.acks), describe_error(exc),
                )

    async def claim_previous_owners(self, conn: Connection) -> None:
        cursor: bytes | str | None = "0-0"
        while cursor is not None:
            self.fence.check(trio.current_time())
            call = self.protocol.plan_claim(cursor, CLAIM_COUNT)
            result = self.protocol.on_claim(
                await evalsha_on(conn, scripts.CLAIM, call.keys, call.args)
            )
            self.counters.trimmed += result.trimmed
            self._notify(result.notices)
            cursor = result.cursor

    async def wait_for_append(
        self, conn: Connection, ctx: ChildContext, last: Any, block_ms: int
    ) -> bool:
        """Block until the stream grows past ``last`` or ``block_ms``; False if stopping."""
        await self._until_stopped(ctx, lambda: conn.execute(
            "XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", self.stream_key, last,
            timeout=block_ms / 1000 + 10.0,
        ))
        return not ctx.stop_requested

    async def _until_stopped(self, ctx: ChildContext, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call()`` under the link's lock, cancelled when a stop is requested (then None).

        The stop cancels a scope it knows (``ChildContext.cancel_on_stop``): no task and no
        nursery per wait, and errors reach the caller as they are.
        """
        with ctx.cancel_on_stop():
            async with self.lock:
                return await call()
        return None

    async def wait_and_read(
        self, conn: Connection, ctx: ChildContext, tail: Any, block_ms: int, count: int
    ) -> ReadResult | None:
        """``wait_for_append`` and the fenced read after it in one round trip (see
        ``protocol.plan_wait_read``); None if stopping or if table writes are to be committed
        (the caller then waits and reads as two round trips).

        With nothing to ack, a stop interrupts it by closing the connection, as it does the
        plain wait: Redis then drops the queued transaction, unless the append came first and
        it ran; what it read stays in our pending list, unhandled, for the next owner (or our
        next session) to claim. With acks to commit it is ``linger_and_read`` for at most
        ``ACK_WAIT_MS``: their fate must not become unknown.
        """
        if self.tables is not None and self.tables.pending:
            return None
        if self.acks:
            return await self.linger_and_read(conn, tail, min(block_ms, ACK_WAIT_MS), count)
        return await self._until_stopped(
            ctx, lambda: self._wait_and_read(conn, tail, block_ms, count, False)
        )

    async def linger_and_read(
        self, conn: Connection, tail: Any, block_ms: int, count: int
    ) -> ReadResult | None:
        """Wait up to ``block_ms`` for an append after ``tail``, then commit the acks and read
        up to ``count`` new entries, in one round trip; not interrupted by a stop (keep it
        short). None if table writes are to be committed (they must not wait for an append).
        """
        await self._acquire()
        try:
            return await self._wait_and_read(conn, tail, block_ms, count, True)
        finally:
            self.lock.release()

    async def _wait_and_read(
        self, conn: Connection, tail: Any, block_ms: int, count: int, with_acks: bool
    ) -> ReadResult | None:
        self.fence.check(trio.current_time())
        if self.tables is not None and self.tables.pending:
            return None  # added while we waited for the lock
        if self._watched is not conn:
            await self._watch(conn)
        protocol = self.protocol
        plan = protocol.plan_wait_read(tail, block_ms, count, self.acks if with_acks else None)
        replies = await conn.pipeline(plan.commands, timeout=block_ms / 1000 + 10.0)
        result = protocol.on_read(plan, replies)
        if not result.watching:
            self._watched = None
        if result.ack_only_retry:
            await self._ack_only(conn)
        result.raise_for_failure()
        self._settle(plan.acks, result)  # committed, fenced by Redis when the EXEC ran
        # Sent before the wait: the lease may have lapsed while we blocked. What was read
        # stays pending (ours, unhandled) for whoever holds the partition next.
        self.fence.check(trio.current_time())
        return result

    async def block_briefly(self, conn: Connection, last: Any, seconds: float) -> None:
        """Wait up to ``seconds`` for the partition to grow past ``last`` (to fill a batch).

        Not interruptible by a stop (it is short): a cancel would close the connection that
        still has to ack the events in hand.
        """
        async with self.lock:
            await conn.execute(
                "XREAD", "COUNT", 1, "BLOCK", max(1, int(seconds * 1000)),
                "STREAMS", self.stream_key, last, timeout=seconds + 10.0,
            )
