"""The fenced Redis side of one partition actor, for one lease epoch.

Every side effect (ack, read into our pending list, claim) is checked against our epoch by
Redis: a Lua script, or a transaction that WATCHes the epoch key. A worker that lost its lease
cannot take or ack anything; even a read is fenced, because an XREADGROUP by a zombie would strand
entries in its pending list. The acks of handled events collect in ``acks`` and ride on the next
round trip (``read``), so there is no Redis round trip per event.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from redis import exceptions as rex

from .._core import keys
from .._core.classify import TRANSIENT_REDIS_ERRORS, describe_error
from .._core.errors import FencedError
from .._core.fence import Fence
from .._transport import Connection, evalsha_on
from . import scripts
from .context import Report
from .counters import Counters
from .supervisor import ChildContext

__all__ = ["CLAIM_COUNT", "PartitionLink"]

log = logging.getLogger("actorstream.partition")

CLAIM_COUNT = 500


def _raise_errors(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


class PartitionLink:
    """Keys, fence and pending acks of (actor, partition, epoch); all its round trips."""

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
    ) -> None:
        self.stream = stream
        self.partition = partition
        self.group = group
        self.consumer = consumer
        self.fence = fence
        self.counters = counters
        self.report = report
        self.stream_key = keys.stream_key(app, stream, partition)
        self.epoch_key = keys.epoch_key(app, stream, partition, group)
        self.meta_key = keys.meta_key(app, stream, partition)
        self.dlq_key = keys.dlq_key(app, stream, partition)
        self.dlq_index_key = keys.dlq_index_key(app, stream, partition)
        self.epoch_arg = str(fence.epoch)
        self.epoch_bytes = self.epoch_arg.encode()
        #: Ids handled but not yet acked; acked by the next ``read`` (replaced, not cleared).
        self.acks: list[bytes] = []
        self._watched: Connection | None = None

    async def ensure_group(self, conn: Connection) -> None:
        """Create the consumer group if new; a group that vanished raises GroupLostError."""
        self.fence.check(trio.current_time())
        await evalsha_on(
            conn, scripts.ENSURE_GROUP, [self.stream_key, self.meta_key], [self.group]
        )

    # Over 60 lines: the hot path's one round trip, kept whole until the sans-I/O protocol
    # (issue 10, milestone 2) splits it into commands and a frozen result.
    async def read(self, conn: Connection, start: bytes | str, count: int) -> list[Any]:
        """Fenced "ack the previous batch, read the next" in one round trip.

        Returns ``[entries or None, pending details or None, last entry id or None]``.

        Fencing without a script: the connection WATCHes the epoch key, and a GET right after
        the WATCH confirms it still holds our epoch. The next write is ``MULTI, XACK,
        XREADGROUP, ..., EXEC, WATCH, GET``: Redis aborts the EXEC if anyone changed the epoch
        since the last WATCH, and the trailing WATCH + GET re-arm the check for the next batch.
        A Lua script did the same but cost Redis twice the CPU per event (converting every
        entry into Lua tables and back); see docs/design.md.
        """
        self.fence.check(trio.current_time())
        epoch_key = self.epoch_key
        if self._watched is not conn:
            watch = await conn.pipeline([("WATCH", epoch_key), ("GET", epoch_key)])
            _raise_errors(watch)
            if watch[1] != self.epoch_bytes:
                current = int(watch[1] or 0)
                if current < self.fence.epoch:
                    self.report(
                        "epoch-regression",
                        f"{self.group}[{self.partition}]: epoch went back from "
                        f"{self.fence.epoch} to {current}: Redis lost data",
                    )
                raise FencedError(
                    f"FENCED epoch is {current}, {self.group}[{self.partition}] has "
                    f"{self.epoch_arg}"
                )
            self._watched = conn
        stream = self.stream_key
        acks = self.acks
        commands: list[Any] = [("MULTI",)]
        if acks:
            commands.append(("XACK", stream, self.group, *acks))
        history = start != ">"
        if count:
            commands.append(
                ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                 "STREAMS", stream, start)
            )
            if history:
                start_id = start.decode() if isinstance(start, bytes) else start
                commands.append(
                    ("XPENDING", stream, self.group, f"({start_id}", "+", count, self.consumer)
                )
            else:
                commands.append(("XREVRANGE", stream, "+", "-", "COUNT", 1))
        commands += [("EXEC",), ("WATCH", epoch_key), ("GET", epoch_key)]
        replies = await conn.pipeline(commands)
        exec_at = len(commands) - 3
        if replies[-1] != self.epoch_bytes or isinstance(replies[-2], Exception):
            self._watched = None  # the next call re-checks and reports FENCED
        for reply in replies[:exec_at]:  # a command refused while queueing: EXECABORT
            if isinstance(reply, Exception):
                if isinstance(reply, rex.OutOfMemoryError) and acks and count:
                    # Under maxmemory XREADGROUP is refused (it grows the pending list) but
                    # XACK is not: still ack what was handled, then back off (backpressure).
                    await self.read(conn, ">", 0)
                raise reply
        result = replies[exec_at]
        if result is None:
            self._watched = None
            raise FencedError(
                f"FENCED the epoch of {self.group}[{self.partition}] changed; "
                f"{self.epoch_arg} is stale"
            )
        if isinstance(result, Exception):
            raise result
        _raise_errors(result)
        if acks:
            self.counters.acked += len(acks)
            self.acks = []
            if result[0] != len(acks):
                # Entries we handled were no longer pending: an operator ran XGROUP
                # DELCONSUMER/SETID, or the stream was trimmed. Nothing to undo; make it visible.
                self.report(
                    "acks-lost",
                    f"{self.group}[{self.partition}]: {len(acks) - int(result[0])} of "
                    f"{len(acks)} handled entries were no longer pending when acked",
                )
        if not count:
            return [None, None, None]
        offset = 1 if acks else 0
        read = result[offset]
        entries = read[0][1] if read else None
        if history:
            return [entries, result[offset + 1], None]
        if entries:
            return [entries, None, None]
        tail = result[offset + 1]
        return [None, None, tail[0][0] if tail else b"0-0"]

    async def flush_acks(self, conn: Connection) -> None:
        if self.acks:
            await self.read(conn, ">", 0)

    async def flush_acks_after_crash(self, conn: Connection) -> None:
        if not self.acks:
            return
        with trio.move_on_after(5.0) as scope:
            scope.shield = True
            try:
                await self.flush_acks(conn)
            except (FencedError, *TRANSIENT_REDIS_ERRORS) as exc:
                # Not acked: these are redelivered (at-least-once); say so.
                log.warning(
                    "%s[%d]: could not ack %d handled event(s) after a crash: %s",
                    self.group, self.partition, len(self.acks), describe_error(exc),
                )

    async def claim_previous_owners(self, conn: Connection) -> None:
        cursor: Any = "0-0"
        while True:
            self.fence.check(trio.current_time())
            nxt, _claimed, deleted = await evalsha_on(
                conn,
                scripts.CLAIM,
                [self.stream_key, self.epoch_key],
                [self.group, self.consumer, self.epoch_arg, cursor, CLAIM_COUNT],
            )
            if deleted:
                self.counters.trimmed += int(deleted)
                self.report(
                    "trimmed",
                    f"{self.group}[{self.partition}]: {deleted} pending entries were trimmed "
                    "from the stream before they were handled",
                )
            if nxt in (b"0-0", "0-0"):
                return
            cursor = nxt

    async def wait_for_append(
        self, conn: Connection, ctx: ChildContext, last: Any, block_ms: int
    ) -> bool:
        """Block until the stream grows past ``last`` or ``block_ms``; False if stopping.

        Errors are caught inside the nursery and re-raised outside it, so callers see a plain
        ``ConnectionError`` (not an ExceptionGroup) and treat it as "Redis unavailable".
        """
        error: Exception | None = None
        async with trio.open_nursery() as nursery:

            async def interrupt_on_stop() -> None:
                await ctx.wait_stop_requested()
                nursery.cancel_scope.cancel()

            nursery.start_soon(interrupt_on_stop)
            try:
                await conn.execute(
                    "XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", self.stream_key, last,
                    timeout=block_ms / 1000 + 10.0,
                )
            except Exception as exc:
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        return not ctx.stop_requested

    async def block_briefly(self, conn: Connection, last: Any, seconds: float) -> None:
        """Wait up to ``seconds`` for the partition to grow past ``last`` (to fill a batch).

        Not interruptible by a stop (it is short): a cancel would close the connection that
        still has to ack the events in hand.
        """
        await conn.execute(
            "XREAD", "COUNT", 1, "BLOCK", max(1, int(seconds * 1000)),
            "STREAMS", self.stream_key, last, timeout=seconds + 10.0,
        )
