"""The partition actor: one per owned (actor, partition), fenced.

Its Redis round trips live in ``link`` (``PartitionLink``); what a handler form sees of them in
``reader``; each form's loop in a module of its own (``LOOPS``: ``serial``, ``lanes``,
``batches``, ``events``); its counters and statistics in ``counters``.

Life of one actor (``statistics().state`` shows where it is)::

    STARTING   ensure the consumer group (never silently recreated), claim a previous owner's
               pending entries (fenced XAUTOCLAIM)
    REPLAYING  re-read our own pending entries in id order: they come before anything new;
               an entry delivered more than ``max_deliveries`` times is dead-lettered
    RUNNING    fenced "ack previous batch + XREADGROUP next batch" transaction (WATCH on the
               epoch key, MULTI/EXEC), one round trip per batch; when the partition is empty,
               wait with a plain XREAD BLOCK (no side effect). With ``ordering="key"`` or
               ``"none"`` many events are in flight (``lanes``), their acks on the next read
    DRAINING   a graceful stop: finish the events in hand, ack, return
    STOPPED | FENCED | FAILED

Every side effect (ack, read into our pending list, claim, dead-letter move) is checked against
our epoch by Redis (a Lua script, or a transaction that WATCHes the epoch key), so a worker that
lost its lease cannot take or ack anything: even a read is fenced, because an XREADGROUP by a
zombie would strand entries in its pending list.

Redis being unreachable is not a crash of the actor: it waits with backoff (WAITING_REDIS) and
resumes from STARTING. Handler failures are not crashes either: ``handling`` contains them
(redelivery, dead letter, or BACKING_OFF with the lease kept; docs/dead-letters.md). Only the
iterator form, whose handler owns its loop, restarts (``HandlerCrashed``), under its own
partition's restart budget (``partitions``); anything else escaping is a runtime failure. A
fence or a lost lease cancels the handlers in flight; nothing they did is acked.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from attrs import frozen

from .._actors import ActorSpec, Form
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.dispatch import Ordering
from .._core.errors import FencedError, GroupLostError
from .._core.fence import Fence
from .._core.outbox import Outbox, Replication
from .._middleware import Middleware, compose
from .._ops import logs as _logs
from .._ops import tracing as _tracing
from .._ops.durations import timed
from .._scope import PartitionTables
from .._transport import Connection, slot_of
from .batches import BatchLoop
from .context import WorkerContext
from .counters import Counters, PartitionState, PartitionStatistics, snapshot
from .deadletters import DeadLetters
from .events import HandlerCrashed, IteratorLoop
from .handling import FENCE_CHECK_EVERY, Handling
from .lanes import LaneLoop
from .link import PartitionLink
from .outbox import Forwarder, beside
from .punctuators import PartitionPunctuators, idle_hooks
from .reader import FormLoop, Reader
from .scoped import ScopedHandling
from .serial import SerialLoop
from .supervisor import ChildContext
from .tables import restore
from .windows import WindowsOfPartition, plain_windows, windowed_tables

__all__ = ["FENCE_CHECK_EVERY", "LOOPS", "HandlerCrashed", "PartitionActor", "PartitionContext"]

log = logging.getLogger("actorstream.partition")

LoopType = Callable[[Reader, Handling, Counters], FormLoop]

#: The loop of each handler form, one event (or batch) at a time or many in flight.
LOOPS: dict[tuple[Form, bool], LoopType] = {
    (Form.EVENT, False): SerialLoop,
    (Form.EVENT, True): LaneLoop,
    (Form.BATCH, False): BatchLoop,
    (Form.BATCH, True): LaneLoop,
    (Form.ITERATOR, False): IteratorLoop,
}


@frozen
class PartitionContext:
    """What one partition actor gets: the worker, its actor and partition, its lease's fence.

    ``counters`` outlive restarts (the partitions supervisor keeps one per slot);
    ``middleware`` is the system-wide list (outermost first); ``on_fenced`` tells the
    coordinator that Redis refused our epoch.
    """

    worker: WorkerContext
    spec: ActorSpec
    partition: int
    fence: Fence
    counters: Counters
    dead_letters: DeadLetters
    middleware: tuple[Middleware, ...]
    on_fenced: Callable[[], None]


class PartitionActor:
    """Runs one (actor, partition) for one lease epoch. Created afresh for each restart."""

    #: Called when a read found nothing new (windowed tables with ``idle=``, wall-clock
    #: punctuators); returns the seconds until it needs calling again, or None.
    on_idle: Callable[[], Awaitable[float | None]] | None = None
    punctuators: PartitionPunctuators | None = None
    #: With tables, one event at a time: the handler the plain loop calls inside the table
    #: scope it holds for a batch (``scoped``).
    bare: Callable[[object], Awaitable[object]] | None = None

    def __init__(self, context: PartitionContext) -> None:
        worker = context.worker
        spec = context.spec
        self.app = worker.app
        self.client = worker.client
        self.report = worker.report
        self.redis = worker.redis
        self.dead_letters = context.dead_letters
        self.spec = spec
        self.partition, self.fence = context.partition, context.fence
        self.counters, self.on_fenced = context.counters, context.on_fenced
        self.group = spec.name
        self.link = PartitionLink(
            app=worker.app, stream=spec.stream.name, partition=context.partition,
            group=spec.name, consumer=worker.worker_id, fence=context.fence,
            counters=context.counters, report=worker.report, packed=not self.client.cluster,
        )
        self.decode, self.settings = spec.stream.format_decoder, spec.settings
        middleware = (*context.middleware, *spec.middleware)
        durations = context.counters.durations  # None unless /metrics is served
        # With /metrics, every handler call is timed for the histogram (a wrapper: the hot loop
        # itself stays as it is without metrics).
        self.handler = (
            spec.handler if durations is None
            else timed(spec.handler, durations.observe, trio.current_time)
        )
        self.chain = compose(self.handler, middleware)
        self.tables = self._stateful(context, middleware) if spec.stateful else None
        # OpenTelemetry: a CONSUMER span per handler call when a tracer provider is set.
        self.tracer = _tracing.tracer()
        self.plain = (
            not middleware
            and spec.on_error is None
            and self.settings.timeout is None
            and self.settings.retries == 0
            and self.tracer is None
            and plain_windows(spec) and not spec.punctuators
        )
        self.handling = self._handling(
            app=worker.app,
            spec=spec,
            partition=context.partition,
            fence=context.fence,
            counters=context.counters,
            link=self.link,
            dead_letters=context.dead_letters,
            handler=self.handler,
            chain=self.chain,
            plain=self.plain,
            tracer=self.tracer,
            report=worker.report,
            redis=worker.redis,
        )
        self.ctx: ChildContext | None = None
        self._rng = random.Random()

    def _handling(self, **kw: Any) -> Handling:
        """The handling side; with tables and one event at a time, the plain loop holds the
        partition's table scope for a batch (``scoped``)."""
        if self.tables is not None and self.bare is not None:
            return ScopedHandling(tables=self.tables, bare=self.bare, **kw)
        return Handling(**kw)

    def _stateful(
        self, context: PartitionContext, middleware: tuple[Middleware, ...]
    ) -> PartitionTables:
        """Tables and held outputs: each handler call (with its middleware) gets its own
        event scope; what it did joins the commit of its ack only if it returned. The
        handler inside the chain has a scope too (one unit with it: ``wrap``)."""
        spec = self.spec
        tables = PartitionTables(
            spec.name, context.partition, spec.tables, holds=spec.exactly_once,
            concurrent=self.settings.ordering is not Ordering.PARTITION,
            resp=spec.exactly_once and not self.client.cluster,
        )
        handler = self.handler
        if not tables.concurrent and not windowed_tables(spec.tables):
            self.bare = handler
        self.handler = tables.wrap(handler)
        self.chain = tables.wrap(compose(self.handler, middleware))
        if windowed_tables(spec.tables):
            windows = WindowsOfPartition(
                tables, windowed_tables(spec.tables), spec.stream, context.counters
            )
            self.handler = windows.wrap_handler(handler)
            self.chain = windows.wrap(self.chain)
            self.on_idle = windows.on_idle if windows.idle else None
        if spec.punctuators:
            self.punctuators = PartitionPunctuators(
                app=self.app, spec=spec, partition=context.partition, tables=tables,
                fence=context.fence, counters=context.counters,
            )
            self.on_idle = idle_hooks(self.on_idle, self.punctuators.on_idle)
        self.link.tables = tables
        if spec.wait_replicas:
            self.link.wait = (spec.wait_replicas, max(1, int(spec.wait_timeout * 1000)))
        context.counters.tables = tables.keys
        return tables

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, ctx: ChildContext) -> None:
        """The supervisor's child function. Returns normally when stopped or fenced."""
        self.ctx = ctx
        # Every log line of this task (and of tasks it starts) names the partition.
        _logs.bind(app=self.app, stream=self.spec.stream.name, actor=self.group,
                   partition=self.partition)
        self.counters.restarts = max(self.counters.restarts, ctx.restarts)  # or ours: iterator
        self.counters.epoch = self.fence.epoch
        delay = 0.05
        try:
            while not ctx.stop_requested:
                try:
                    role = f"p:{self.group}:{self.partition}"
                    # On a Redis Cluster: opened on the node of this partition's slot, and
                    # following it when the slot moves (a move under WATCH ends the session).
                    async with self.client.dedicated(role, key=self.link.stream_key) as conn:
                        await self._session(conn, ctx)
                    return
                except TRANSIENT_REDIS_ERRORS as exc:
                    self.counters.redis_errors[type(exc).__name__] += 1
                    self._set_state(PartitionState.WAITING_REDIS)
                    self.counters.last_error = describe_error(exc)
                    self.redis.unavailable(
                        f"{self.group}[{self.partition}]", self.counters.last_error
                    )
                except GroupLostError as exc:
                    self._set_state(PartitionState.GROUP_LOST)
                    self.counters.last_error = describe_error(exc)
                    self.report("group-lost", f"{self.group}[{self.partition}]: {exc}")
                    log.error("%s[%d]: %s", self.group, self.partition, exc)
                    delay = 5.0
                await _sleep_unless_stopped(ctx, delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 5.0)
        except FencedError as exc:
            self._set_state(PartitionState.FENCED)
            self.counters.last_error = describe_error(exc)
            self.report("fenced", f"{self.group}[{self.partition}]: {exc}")
            self.redis.fenced(log, f"{self.group}[{self.partition}]", exc)
            self.on_fenced()
            return
        except HandlerCrashed:
            raise  # counted and logged already; ``partitions`` restarts it
        except Exception as exc:
            self._set_state(PartitionState.FAILED)
            self.counters.failed += 1
            self.counters.last_error = describe_error(exc)
            self.report(
                "crash", f"{self.group}[{self.partition}]: {self.counters.last_error}"
            )
            log.error(
                "%s[%d] crashed: %s", self.group, self.partition, self.counters.last_error,
                exc_info=exc,
            )
            raise
        finally:
            if self.counters.state not in (PartitionState.FENCED, PartitionState.FAILED):
                self._set_state(PartitionState.STOPPED)

    def _set_state(self, state: PartitionState) -> None:
        self.counters.state = state

    async def _session(self, conn: Connection, ctx: ChildContext) -> None:
        self._set_state(PartitionState.STARTING)
        await self.link.ensure_group(conn)
        await self.link.claim_previous_owners(conn)
        forwarder = self._forwarder(conn)  # before anything commits: it routes the outputs
        if self.tables is not None:
            # What this actor held (values, writes and acks not known to be committed) is
            # dropped together: Redis is the truth; unacked events are replayed below.
            self._set_state(PartitionState.RESTORING)
            self.link.acks.clear()
            began = trio.current_time()
            await restore(self.tables, conn, self.fence, self.report)
            self.counters.restore_seconds = trio.current_time() - began
            if self.punctuators is not None:
                await self.punctuators.start(conn, ctx, self.handling)
        reader = Reader(self.link, conn, ctx, self.settings.batch_size, self.on_idle)
        concurrent = self.settings.ordering is not Ordering.PARTITION
        loop = LOOPS[self.spec.form, concurrent](reader, self.handling, self.counters)
        self._set_state(PartitionState.REPLAYING)
        try:
            await beside(forwarder, lambda: self._handle(loop, ctx))
        except Exception:
            # Ack what was handled before the crash, so only the failing event is redelivered.
            await self.link.flush_acks_after_crash(conn, self.redis.explains)
            raise
        self._set_state(PartitionState.DRAINING)
        await reader.flush()
        if forwarder is not None:
            await forwarder.drain()

    async def _handle(self, loop: FormLoop, ctx: ChildContext) -> None:
        await loop.replay()
        if ctx.stop_requested:
            return
        self._set_state(PartitionState.RUNNING)
        await loop.run()

    def _forwarder(self, conn: Connection) -> Forwarder | None:
        """Exactly-once on a Redis Cluster: a commit is one MULTI in the partition's slot, so
        outputs to other slots go to the outbox, forwarded beside the loop (``outbox``)."""
        if not self.spec.exactly_once or not self.client.cluster:
            return None
        link = self.link
        wait = link.wait
        link.replication = replication = Replication() if wait is not None else None

        async def replicated() -> int:
            """A bare WAIT on the connection that committed (it counts that one's writes)."""
            assert wait is not None and replication is not None
            async with link.lock:
                number = replication.send()
                acknowledged = int(await conn.execute(
                    "WAIT", wait[0], wait[1], timeout=wait[1] / 1000 + 10
                ))
            if acknowledged >= wait[0]:
                replication.confirm(number)
            return acknowledged

        forwarder = Forwarder(
            client=self.client, app=self.app, stream=self.spec.stream.name,
            partition=self.partition, actor=self.group, fence=self.fence,
            counters=self.counters, report=self.report, wait=wait, replicated=replicated,
            replication=replication,
        )
        home = slot_of(self.link.stream_key)
        link.outbox = Outbox(forwarder.key, lambda key: slot_of(key) == home)
        link.on_outbox = forwarder.wake
        self.counters.outbox = self.counters.outbox or 0
        return forwarder

    def statistics(self) -> PartitionStatistics:
        return snapshot(self.spec, self.partition, self.counters)


async def _sleep_unless_stopped(ctx: ChildContext, delay: float) -> None:
    with trio.move_on_after(delay):
        await ctx.wait_stop_requested()
