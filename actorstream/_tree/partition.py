"""The partition actor: one per owned (actor, partition), strictly in order, fenced.

Its Redis round trips live in ``link`` (``PartitionLink``); the iterator form in ``events``;
its counters and statistics in ``counters``.

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
resumes from STARTING. Handler failures are not crashes either: ``handling`` contains them
(redelivery, dead letter, or BACKING_OFF with the lease kept; docs/dead-letters.md). Only the
iterator form, whose handler owns its loop, restarts (``HandlerCrashed``), under its own
partition's restart budget (``partitions``); anything else escaping is a runtime failure.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from attrs import frozen

from .._actors import ActorSpec, Form
from .._core.classify import TRANSIENT_REDIS_ERRORS, describe_error
from .._core.errors import FencedError, GroupLostError
from .._core.fence import Fence
from .._middleware import Middleware, compose
from .._ops import logs as _logs
from .._ops import tracing as _tracing
from .._ops.durations import timed
from .._scope import PartitionTables
from .._transport import Connection
from .batches import run_batches
from .context import WorkerContext
from .counters import Counters, PartitionState, PartitionStatistics, snapshot
from .deadletters import DeadLetters
from .events import Events
from .handling import FENCE_CHECK_EVERY, Handling
from .link import PartitionLink
from .supervisor import ChildContext
from .tables import restore
from .windows import WindowsOfPartition, plain_windows, windowed_tables

__all__ = ["FENCE_CHECK_EVERY", "HandlerCrashed", "PartitionActor", "PartitionContext"]

log = logging.getLogger("actorstream.partition")

WAIT_BLOCK_MS = 2000


class HandlerCrashed(Exception):
    """The iterator form's handler (which owns its loop) raised: its partition actor restarts."""


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

    #: Called when a read found nothing new (windowed tables with ``idle=``).
    on_idle: Callable[[], Awaitable[None]] | None = None

    # Over 60 lines: one attribute per collaborator, each wired once, in one place.
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
        self.counters = context.counters
        self.on_fenced = context.on_fenced
        self.group = spec.name
        self.link = PartitionLink(
            app=worker.app,
            stream=spec.stream.name,
            partition=context.partition,
            group=spec.name,
            consumer=worker.worker_id,
            fence=context.fence,
            counters=context.counters,
            report=worker.report,
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
            and plain_windows(spec)
        )
        self._failing: bytes | None = None  # the entry whose handler call raised last
        self.handling = Handling(
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

    def _stateful(
        self, context: PartitionContext, middleware: tuple[Middleware, ...]
    ) -> PartitionTables:
        """Tables and held outputs: each handler call (with its middleware) gets its own
        event scope; what it did joins the commit of its ack only if it returned. The
        handler inside the chain has a scope too (one unit with it: ``wrap``)."""
        spec = self.spec
        tables = PartitionTables(
            spec.name, context.partition, spec.tables, holds=spec.exactly_once
        )
        self.handler = tables.wrap(self.handler)
        self.chain = tables.wrap(compose(self.handler, middleware))
        if windowed_tables(spec.tables):
            windows = WindowsOfPartition(
                tables, windowed_tables(spec.tables), spec.stream.event_time_ms,
                context.counters.late,
            )
            self.handler, self.chain = windows.wrap(self.handler), windows.wrap(self.chain)
            self.on_idle = windows.on_idle if windows.idle else None
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
            failing = self._failing
            log.error(
                "%s[%d] crashed%s: %s", self.group, self.partition,
                f" on {failing.decode()}" if failing else "", self.counters.last_error,
                exc_info=exc, extra={"entry_id": failing.decode() if failing else None},
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
        if self.tables is not None:
            # What this actor held (values, writes and acks not known to be committed) is
            # dropped together: Redis is the truth; unacked events are replayed below.
            self._set_state(PartitionState.RESTORING)
            self.link.acks = []
            began = trio.current_time()
            await restore(self.tables, conn, self.fence, self.report)
            self.counters.restore_seconds = trio.current_time() - began
        self._set_state(PartitionState.REPLAYING)
        if self.spec.form is not Form.ITERATOR:  # the iterator replays in its own loop
            await self._replay_own_pending(conn, ctx)
        if ctx.stop_requested:
            await self.link.flush_acks(conn)
            return
        self._set_state(PartitionState.RUNNING)
        form = self.spec.form
        try:
            if form is Form.EVENT:
                await self._run_events(conn, ctx)
            elif form is Form.BATCH:
                await run_batches(self, conn, ctx)
            else:
                await self._run_iterator(conn, ctx)
        except Exception:
            # Ack what was handled before the crash, so only the failing event is redelivered.
            await self.link.flush_acks_after_crash(conn)
            raise
        self._set_state(PartitionState.DRAINING)
        await self.link.flush_acks(conn)

    # -- Redis side effects, all fenced -------------------------------------------------------

    async def _replay_own_pending(self, conn: Connection, ctx: ChildContext) -> None:
        start: bytes = b"0"
        handling = self.handling
        while not ctx.stop_requested:
            # One entry at a time: reading from history bumps the delivery count of every entry
            # returned, and the ones behind a poison event must not be charged for its failures.
            # (Our own pending list is at most about a batch, so this costs a few round trips.)
            # (Entries trimmed while pending are acked away by the link, and left out.)
            read = await self.link.read(conn, start, 1)
            if read.last is None:
                return
            start = read.last
            if self.spec.form is Form.BATCH:
                await handling.process_batch(conn, ctx, read.entries, read.deliveries)
            else:
                await handling.process(conn, ctx, read.entries, read.deliveries)

    # -- the hot loops ------------------------------------------------------------------------

    async def _next_entries(self, conn: Connection, ctx: ChildContext) -> list[Any] | None:
        """The next batch of new entries, waiting when the partition is empty.

        Returns None when a graceful stop was requested while waiting.
        """
        count = self.settings.batch_size
        while True:
            read = await self.link.read(conn, ">", count)
            if read.entries:
                return read.entries
            if ctx.stop_requested:
                return None
            if self.on_idle is not None:  # windows: stream time may move on when quiet
                await self.on_idle()
            # Nothing new: wait for an append after the tail with a side-effect-free XREAD.
            # A graceful stop interrupts the wait (closing this connection; nothing is unacked).
            if not await self.link.wait_for_append(conn, ctx, read.tail, WAIT_BLOCK_MS):
                return None

    async def _run_events(self, conn: Connection, ctx: ChildContext) -> None:
        while not ctx.stop_requested:
            entries = await self._next_entries(conn, ctx)
            if entries is None:
                return
            await self.handling.process(conn, ctx, entries)

    async def _run_iterator(self, conn: Connection, ctx: ChildContext) -> None:
        events = Events(self, conn, ctx)
        while not ctx.stop_requested:
            try:
                await self.spec.handler(events)
            except (FencedError, *TRANSIENT_REDIS_ERRORS):
                raise  # ours, from inside the iterator
            except Exception as exc:
                self.counters.errors[type(exc).__name__] += 1
                # The loop's state is gone with it: restart the actor (``partitions`` does,
                # under this partition's own budget); replay delivers this event first.
                current = events.current_id()
                self.handling.note_failure(exc, current or b"?", 0)
                raise HandlerCrashed(describe_error(exc)) from exc
            events.done_with_current()

    def statistics(self) -> PartitionStatistics:
        return snapshot(self.spec, self.partition, self.counters)


async def _sleep_unless_stopped(ctx: ChildContext, delay: float) -> None:
    with trio.move_on_after(delay):
        await ctx.wait_stop_requested()
