"""The partition actor: one per owned (actor, partition), strictly in order, fenced.

Life of one actor (``statistics().state`` shows where it is)::

    STARTING   ensure the consumer group (never silently recreated), claim a previous owner's
               pending entries (fenced XAUTOCLAIM)
    REPLAYING  re-read our own pending entries in id order: they come before anything new;
               an entry delivered more than ``max_deliveries`` times is dead-lettered
    RUNNING    fenced "ack previous batch + XREADGROUP next batch" transaction (WATCH on the
               epoch key, MULTI/EXEC), one round trip per batch; when the partition is empty,
               wait with a plain XREAD BLOCK (no side effect)
    DRAINING   a graceful stop: finish the event in hand, ack, return
    STOPPED | FENCED | FAILED

Every side effect (ack, read into our pending list, claim, dead-letter move) is checked against
our epoch by Redis (a Lua script, or a transaction that WATCHes the epoch key), so a worker that
lost its lease cannot take or ack anything: even a read is fenced, because an XREADGROUP by a
zombie would strand entries in its pending list.

Redis being unreachable is not a crash of the actor: it waits with backoff (WAITING_REDIS) and
resumes from STARTING; handler exceptions are crashes and go to the supervisor.
"""

from __future__ import annotations

import collections
import enum
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import trio
from attrs import frozen
from redis import exceptions as rex

from . import _scripts
from ._actors import ActorSpec, Form
from ._core import keys as _keys
from ._core.classify import TRANSIENT_REDIS_ERRORS, describe_error, format_traceback
from ._core.errors import DecodeError, FencedError, GroupLostError
from ._core.fence import Fence
from ._middleware import EventInfo, Outcome, compose
from ._supervisor import ChildContext
from ._transport import Connection, evalsha_on

if TYPE_CHECKING:
    from ._system import Runtime

log = logging.getLogger("actorstream.partition")

WAIT_BLOCK_MS = 2000
SAMPLE_EVERY = 16
FENCE_CHECK_EVERY = 8
CLAIM_COUNT = 500


class PartitionState(enum.Enum):
    STARTING = "starting"
    REPLAYING = "replaying"
    RUNNING = "running"
    DRAINING = "draining"
    WAITING_REDIS = "waiting-redis"
    GROUP_LOST = "group-lost"
    STOPPED = "stopped"
    FENCED = "fenced"
    FAILED = "failed"


@frozen
class PartitionStatistics:
    actor: str
    stream: str
    partition: int
    state: str
    epoch: int
    processed: int
    acked: int
    failed: int
    dead_lettered: int
    trimmed: int
    restarts: int
    last_error: str | None
    last_dead_letter: str | None
    handler_p50: float | None = None
    handler_p99: float | None = None


class Counters:
    """Mutable counters of one (actor, partition), kept across restarts of its actor."""

    __slots__ = (
        "acked",
        "dead_lettered",
        "epoch",
        "failed",
        "last_dead_letter",
        "last_error",
        "latencies",
        "processed",
        "restarts",
        "state",
        "trimmed",
    )

    def __init__(self) -> None:
        self.state = PartitionState.STARTING
        self.epoch = 0
        self.processed = 0
        self.acked = 0
        self.failed = 0
        self.dead_lettered = 0
        self.trimmed = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.last_dead_letter: str | None = None
        # Handler durations of every SAMPLE_EVERY-th event: p50/p99 for `top`, cheaply.
        self.latencies: collections.deque[float] = collections.deque(maxlen=256)


def _raise_errors(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


class PartitionActor:
    """Runs one (actor, partition) for one lease epoch. Created afresh for each restart."""

    def __init__(
        self,
        runtime: Runtime,
        spec: ActorSpec,
        partition: int,
        fence: Fence,
        counters: Counters,
        on_fenced: Callable[[], None],
    ) -> None:
        self.runtime = runtime
        self.spec = spec
        self.partition = partition
        self.fence = fence
        self.counters = counters
        self.on_fenced = on_fenced
        app = runtime.app
        stream = spec.stream.name
        self.stream_key = _keys.stream_key(app, stream, partition)
        self.epoch_key = _keys.epoch_key(app, stream, partition, spec.name)
        self.meta_key = _keys.meta_key(app, stream, partition)
        self.dlq_key = _keys.dlq_key(app, stream, partition)
        self.dlq_index_key = _keys.dlq_index_key(app, stream, partition)
        self.group = spec.name
        self.consumer = runtime.worker_id
        self.epoch_arg = str(fence.epoch)
        self.epoch_bytes = self.epoch_arg.encode()
        self._watched: Connection | None = None
        self.decode = spec.stream.format_decoder
        self.settings = spec.settings
        self.acks: list[bytes] = []
        middleware = (*runtime.system._middleware, *spec.middleware)
        self.chain = compose(spec.handler, middleware)
        self.plain = (
            not middleware
            and spec.on_error is None
            and self.settings.timeout is None
            and self.settings.retries == 0
        )
        self.ctx: ChildContext | None = None
        self._rng = random.Random()

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, ctx: ChildContext) -> None:
        """The supervisor's child function. Returns normally when stopped or fenced."""
        self.ctx = ctx
        self.counters.restarts = ctx.restarts
        self.counters.epoch = self.fence.epoch
        delay = 0.05
        try:
            while not ctx.stop_requested:
                try:
                    role = f"p:{self.group}:{self.partition}"
                    async with self.runtime.client.dedicated(role) as conn:
                        await self._session(conn, ctx)
                    return
                except TRANSIENT_REDIS_ERRORS as exc:
                    self._set_state(PartitionState.WAITING_REDIS)
                    self.counters.last_error = describe_error(exc)
                    log.warning(
                        "%s[%d]: Redis unavailable (%s); retrying in %.2fs",
                        self.group, self.partition, self.counters.last_error, delay,
                    )
                except GroupLostError as exc:
                    self._set_state(PartitionState.GROUP_LOST)
                    self.counters.last_error = describe_error(exc)
                    self.runtime.report("group-lost", f"{self.group}[{self.partition}]: {exc}")
                    log.error("%s[%d]: %s", self.group, self.partition, exc)
                    delay = 5.0
                await _sleep_unless_stopped(ctx, delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 5.0)
        except FencedError as exc:
            self._set_state(PartitionState.FENCED)
            self.counters.last_error = describe_error(exc)
            self.runtime.report("fenced", f"{self.group}[{self.partition}]: {exc}")
            log.warning("%s[%d] fenced: %s", self.group, self.partition, exc)
            self.on_fenced()
            return
        except Exception as exc:
            self._set_state(PartitionState.FAILED)
            self.counters.failed += 1
            self.counters.last_error = describe_error(exc)
            self.runtime.report(
                "crash", f"{self.group}[{self.partition}]: {self.counters.last_error}"
            )
            raise
        finally:
            if self.counters.state not in (PartitionState.FENCED, PartitionState.FAILED):
                self._set_state(PartitionState.STOPPED)

    def _set_state(self, state: PartitionState) -> None:
        self.counters.state = state

    async def _session(self, conn: Connection, ctx: ChildContext) -> None:
        self._set_state(PartitionState.STARTING)
        self.fence.check(trio.current_time())
        await evalsha_on(
            conn, _scripts.ENSURE_GROUP, [self.stream_key, self.meta_key], [self.group]
        )
        await self._claim_previous_owners(conn)
        self._set_state(PartitionState.REPLAYING)
        await self._replay_own_pending(conn, ctx)
        if ctx.stop_requested:
            await self._flush_acks(conn)
            return
        self._set_state(PartitionState.RUNNING)
        form = self.spec.form
        try:
            if form is Form.EVENT:
                await self._run_events(conn, ctx)
            elif form is Form.BATCH:
                await self._run_batches(conn, ctx)
            else:
                await self._run_iterator(conn, ctx)
        except Exception:
            # Ack what was handled before the crash, so only the failing event is redelivered.
            await self._flush_acks_after_crash(conn)
            raise
        self._set_state(PartitionState.DRAINING)
        await self._flush_acks(conn)

    # -- Redis side effects, all fenced -------------------------------------------------------

    async def _read(self, conn: Connection, start: bytes | str, count: int) -> list[Any]:
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
                    self.runtime.report(
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
                    await self._read(conn, ">", 0)
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
                self.runtime.report(
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

    async def _flush_acks(self, conn: Connection) -> None:
        if self.acks:
            await self._read(conn, ">", 0)

    async def _flush_acks_after_crash(self, conn: Connection) -> None:
        if not self.acks:
            return
        with trio.move_on_after(5.0) as scope:
            scope.shield = True
            try:
                await self._flush_acks(conn)
            except (FencedError, *TRANSIENT_REDIS_ERRORS) as exc:
                # Not acked: these are redelivered (at-least-once); say so.
                log.warning(
                    "%s[%d]: could not ack %d handled event(s) after a crash: %s",
                    self.group, self.partition, len(self.acks), describe_error(exc),
                )

    async def _claim_previous_owners(self, conn: Connection) -> None:
        cursor: Any = "0-0"
        while True:
            self.fence.check(trio.current_time())
            nxt, _claimed, deleted = await evalsha_on(
                conn,
                _scripts.CLAIM,
                [self.stream_key, self.epoch_key],
                [self.group, self.consumer, self.epoch_arg, cursor, CLAIM_COUNT],
            )
            if deleted:
                self.counters.trimmed += int(deleted)
                self.runtime.report(
                    "trimmed",
                    f"{self.group}[{self.partition}]: {deleted} pending entries were trimmed "
                    "from the stream before they were handled",
                )
            if nxt in (b"0-0", "0-0"):
                return
            cursor = nxt

    async def _replay_own_pending(self, conn: Connection, ctx: ChildContext) -> None:
        start: bytes = b"0"
        max_deliveries = self.settings.max_deliveries
        while not ctx.stop_requested:
            # One entry at a time: reading from history bumps the delivery count of every entry
            # returned, and the ones behind a poison event must not be charged for its crashes.
            # (Our own pending list is at most about a batch, so this costs a few round trips.)
            entries, pending, _last = await self._read(conn, start, 1)
            if not entries:
                return
            counts = {p[0]: int(p[3]) for p in pending} if pending else {}
            batch: list[tuple[bytes, Any]] = []
            for entry_id, fields in entries:
                start = entry_id
                if not fields:
                    # Trimmed or deleted while pending: nothing to handle; ack it away.
                    self.counters.trimmed += 1
                    self.acks.append(entry_id)
                    continue
                deliveries = counts.get(entry_id, 1)
                try:
                    self.decode(fields)
                except DecodeError as exc:
                    # Undecodable is the real reason, whatever its count says (a failed
                    # dead-letter move, e.g. under OOM, is retried with a higher count).
                    await self._dead_letter(
                        conn, entry_id, fields, f"decode:{exc.kind}", str(exc), None, deliveries
                    )
                    continue
                if deliveries > max_deliveries:
                    await self._dead_letter(
                        conn,
                        entry_id,
                        fields,
                        "max_deliveries",
                        f"delivered {deliveries} times (max_deliveries={max_deliveries})",
                        self.counters.last_error,
                        deliveries,
                    )
                    continue
                batch.append((entry_id, fields))
            if batch:
                if self.spec.form is Form.BATCH:
                    await self._handle_batch(conn, batch, deliveries=deliveries)
                else:
                    await self._handle_each(conn, ctx, batch)

    async def _dead_letter(
        self,
        conn: Connection,
        entry_id: bytes,
        fields: list[bytes],
        kind: str,
        message: str,
        trace: str | None,
        deliveries: int,
    ) -> None:
        await self.runtime.dead_letters.move(
            self, conn, entry_id, fields, kind=kind, message=message, trace=trace,
            deliveries=deliveries,
        )
        self.counters.dead_lettered += 1
        self.counters.last_dead_letter = f"{kind}: {message}"[:300]

    # -- the hot loops ------------------------------------------------------------------------

    async def _next_entries(self, conn: Connection, ctx: ChildContext) -> list[Any] | None:
        """The next batch of new entries, waiting when the partition is empty.

        Returns None when a graceful stop was requested while waiting.
        """
        count = self.settings.batch_size
        while True:
            entries, _pending, last = await self._read(conn, ">", count)
            if entries:
                return entries  # type: ignore[no-any-return]
            if ctx.stop_requested:
                return None
            # Nothing new: wait for an append after the tail with a side-effect-free XREAD.
            # A graceful stop interrupts the wait (closing this connection; nothing is unacked).
            if not await self._wait_for_append(conn, ctx, last, WAIT_BLOCK_MS):
                return None

    async def _wait_for_append(
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

    async def _block_briefly(self, conn: Connection, last: Any, seconds: float) -> None:
        """Wait up to ``seconds`` for the partition to grow past ``last`` (to fill a batch).

        Not interruptible by a stop (it is short): a cancel would close the connection that
        still has to ack the events in hand.
        """
        await conn.execute(
            "XREAD", "COUNT", 1, "BLOCK", max(1, int(seconds * 1000)),
            "STREAMS", self.stream_key, last, timeout=seconds + 10.0,
        )

    async def _run_events(self, conn: Connection, ctx: ChildContext) -> None:
        while not ctx.stop_requested:
            entries = await self._next_entries(conn, ctx)
            if entries is None:
                return
            await self._handle_each(conn, ctx, entries)

    async def _handle_each(
        self, conn: Connection, ctx: ChildContext, entries: list[Any]
    ) -> None:
        decode = self.decode
        handler = self.spec.handler
        acks = self.acks
        counters = self.counters
        fence = self.fence
        if self.plain:
            # The hot path: no timeout, retries, middleware or error hook to consult.
            # Locals and a local count: this loop body runs once per event.
            stopping = ctx.stop_event.is_set
            ack = acks.append
            done = 0
            try:
                for entry_id, fields in entries:
                    if stopping():
                        return
                    if not done % FENCE_CHECK_EVERY:
                        # A resumed zombie stops within a few events, not after its whole
                        # batch (reading the clock per event cost a tenth of the hot path).
                        fence.check(trio.current_time())
                    try:
                        event = decode(fields)
                    except DecodeError as exc:
                        await self._dead_letter(
                            conn, entry_id, fields, f"decode:{exc.kind}", str(exc), None, 1
                        )
                        continue
                    if done % SAMPLE_EVERY:
                        await handler(event)
                    else:
                        started = trio.current_time()
                        await handler(event)
                        counters.latencies.append(trio.current_time() - started)
                    ack(entry_id)
                    done += 1
            finally:
                counters.processed += done
            return
        for entry_id, fields in entries:
            if ctx.stop_requested:
                return
            fence.check(trio.current_time())
            try:
                event = decode(fields)
            except DecodeError as exc:
                await self._dead_letter(
                    conn, entry_id, fields, f"decode:{exc.kind}", str(exc), None, 1
                )
                continue
            started = trio.current_time()
            result = await self._handle_one(conn, entry_id, fields, event)
            if not counters.processed % SAMPLE_EVERY:
                counters.latencies.append(trio.current_time() - started)
            if result is not _MOVED:
                acks.append(entry_id)
            if result is _HANDLED:
                counters.processed += 1

    def _info(self, entry_id: bytes) -> EventInfo:
        return EventInfo(
            system=self.runtime.app,
            actor=self.group,
            stream=self.spec.stream.name,
            partition=self.partition,
            entry_id=entry_id.decode(),
            epoch=self.fence.epoch,
        )

    async def _handle_one(
        self, conn: Connection, entry_id: bytes, fields: list[bytes], event: Any
    ) -> object:
        """Handle with middleware, timeout, retries and the error hook.

        Returns _HANDLED, _SKIPPED (the hook chose SKIP: ack it) or _MOVED (the hook chose
        DEAD_LETTER: the move acked it); raises when the actor must crash.
        """
        info = self._info(entry_id)
        chain = self.chain
        try:
            await self._call(lambda ev: chain(ev, info), event)
            return _HANDLED
        except Exception as exc:
            hook = self.spec.on_error
            if hook is None:
                raise
            outcome = await hook(event, exc, info)
            if outcome is Outcome.SKIP:
                self.runtime.report("skipped", f"{self.group}[{self.partition}] {info.entry_id}: "
                                    f"{describe_error(exc)}")
                return _SKIPPED
            if outcome is Outcome.DEAD_LETTER:
                await self._dead_letter(
                    conn, entry_id, fields, "handler", describe_error(exc),
                    format_traceback(exc), 1,
                )
                return _MOVED
            raise

    async def _call(self, fn: Callable[[Any], Any], arg: Any) -> None:
        """The handler (chain) with the actor's timeout and in-process retries."""
        settings = self.settings
        attempt = 0
        while True:
            try:
                if settings.timeout is None:
                    await fn(arg)
                else:
                    with trio.fail_after(settings.timeout):
                        await fn(arg)
                return
            except Exception as exc:
                error: Exception = exc
                if isinstance(exc, trio.TooSlowError):
                    error = TimeoutError(
                        f"handler took longer than timeout={settings.timeout:g}s"
                    )
                self.counters.last_error = describe_error(error)
                if attempt >= settings.retries:
                    if error is exc:
                        raise
                    raise error from None
                attempt += 1
                await trio.sleep(settings.retry_backoff * 2 ** (attempt - 1))

    async def _run_batches(self, conn: Connection, ctx: ChildContext) -> None:
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
                    more, _p, last = await self._read(conn, ">", size - len(entries))
                    if more:
                        entries.extend(more)
                        continue
                    await self._block_briefly(conn, last, remaining)
            await self._handle_batch(conn, entries, deliveries=1)

    async def _handle_batch(
        self, conn: Connection, entries: list[Any], *, deliveries: int
    ) -> None:
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
            self.acks.extend(ids)
            return
        self.acks.extend(ids)
        self.counters.processed += len(events)

    async def _run_iterator(self, conn: Connection, ctx: ChildContext) -> None:
        events = Events(self, conn, ctx)
        while not ctx.stop_requested:
            await self.spec.handler(events)
            events.done_with_current()

    def statistics(self) -> PartitionStatistics:
        return snapshot(self.spec, self.partition, self.counters)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def snapshot(spec: ActorSpec, partition: int, c: Counters) -> PartitionStatistics:
    ordered = sorted(c.latencies)
    return PartitionStatistics(
        actor=spec.name,
        stream=spec.stream.name,
        partition=partition,
        state=c.state.value,
        epoch=c.epoch,
        processed=c.processed,
        acked=c.acked,
        failed=c.failed,
        dead_lettered=c.dead_lettered,
        trimmed=c.trimmed,
        restarts=c.restarts,
        last_error=c.last_error,
        last_dead_letter=c.last_dead_letter,
        handler_p50=_percentile(ordered, 0.5),
        handler_p99=_percentile(ordered, 0.99),
    )


class Events:
    """The iterator form: ``async for event in events`` (and ``events.take(n, within=s)``).

    An event counts as handled when the loop asks for the next one (or ends normally), so a
    crash in the loop body redelivers that event first.
    """

    def __init__(self, actor: PartitionActor, conn: Connection, ctx: ChildContext) -> None:
        self._actor = actor
        self._conn = conn
        self._ctx = ctx
        self._buffer: list[Any] = []
        self._pos = 0
        self._current: list[bytes] = []
        self._tail: Any = b"0-0"

    @property
    def partition(self) -> int:
        return self._actor.partition

    def done_with_current(self) -> None:
        if self._current:
            self._actor.acks.extend(self._current)
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
                    await actor._dead_letter(
                        self._conn, entry_id, fields, f"decode:{exc.kind}", str(exc), None, 1
                    )
                    continue
                actor.fence.check(trio.current_time())
                self._current.append(entry_id)
                return event
            if self._ctx.stop_requested:
                raise StopAsyncIteration
            if not wait:
                entries, _p, tail = await actor._read(self._conn, ">", actor.settings.batch_size)
                if not entries:
                    self._tail = tail
                    return _NOTHING
            else:
                entries = await actor._next_entries(self._conn, self._ctx)
                if entries is None:
                    raise StopAsyncIteration
            self._buffer = entries
            self._pos = 0

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
                    await self._actor._block_briefly(self._conn, self._tail, remaining)
                    continue
                batch.append(item)
            yield batch


_NOTHING: Any = object()
_HANDLED = object()
_SKIPPED = object()
_MOVED = object()


async def _sleep_unless_stopped(ctx: ChildContext, delay: float) -> None:
    with trio.move_on_after(delay):
        await ctx.wait_stop_requested()
