"""Handling: decode, handle, then ack or dead-letter, with failures contained.

One routine, ``Handling.process``, takes a partition actor's entries in order, whether newly
read (first deliveries) or replayed from its pending list (Redis's delivery counts), for the
event form and for batch handlers' events one at a time; ``_process_plain`` is its hot path.
The loops with events in flight (``lanes``) handle one entry at a time with the same parts:
``handle`` (middleware, timeout, retries, error hook), ``contain`` and ``book``.

A failed handling never crashes the partition actor: ``contain`` asks the pure rule in
``_core.failures`` what to do (redeliver at once, dead-letter, or back off keeping the lease and
the event's deliveries) and carries it out. docs/dead-letters.md, "Poison or outage", states the
rule; the partition actor (``partition``) owns the round trips this reuses (``link``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import trio

from .._actors import ActorSpec, Form
from .._core.crashes import LogAction, describe_error, format_bounded_traceback
from .._core.deadletter import GivenUp
from .._core.errors import DecodeError
from .._core.failures import Action
from .._core.fence import Fence
from .._middleware import EventInfo, Outcome
from .._ops import tracing as _tracing
from .._transport import Connection
from .context import RedisHealth
from .counters import SAMPLE_EVERY, Counters, PartitionState
from .deadletters import DeadLetters, Poison
from .link import PartitionLink
from .supervisor import ChildContext

__all__ = ["FENCE_CHECK_EVERY", "HANDLED", "MOVED", "SKIPPED", "STOPPED", "Handling"]

log = logging.getLogger("actorstream.partition")

FENCE_CHECK_EVERY = 8

HANDLED = object()  # the handler returned: ack it
SKIPPED = object()  # on_error chose SKIP: ack it
MOVED = object()  # dead-lettered (the move acked it), or no longer pending: nothing to ack
STOPPED = object()  # a stop was requested while backing off: it stays pending

Handle = Callable[[Connection, bytes, list[bytes], Any], Awaitable[object]]  # -> HANDLED ...


class Handling:
    """The handling side of one partition actor (created with it, for one lease epoch)."""

    def __init__(
        self,
        *,
        app: str,
        spec: ActorSpec,
        partition: int,
        fence: Fence,
        counters: Counters,
        link: PartitionLink,
        dead_letters: DeadLetters,
        handler: Callable[[Any], Awaitable[Any]],
        chain: Callable[[Any, EventInfo], Awaitable[None]],
        plain: bool,
        tracer: Any,
        report: Callable[[str, str], None],
        redis: RedisHealth | None = None,
    ) -> None:
        self.app = app
        self.spec = spec
        self.group = spec.name
        self.partition = partition
        self.fence = fence
        self.counters = counters
        self.link = link
        self.dead_letters = dead_letters
        self.handler = handler  # the spec's, or timed for /metrics
        self.chain = chain
        self.tracer = tracer  # OpenTelemetry: a CONSUMER span per handler call, or None
        self.plain = plain and spec.form is Form.EVENT
        self.report = report
        self.redis = redis  # this worker's Redis outages: their failures are logged once
        self.decode = spec.stream.format_decoder
        self.settings = spec.settings
        self.containment = counters.failures.policy
        self.handle: Handle = (
            self._handle_one if spec.form is not Form.BATCH else self._handle_alone
        )
        self._woke_early = False  # the last backoff was cut short by others' recovery

    async def dead_letter(
        self,
        conn: Connection,
        entry_id: bytes,
        fields: list[bytes],
        kind: str,
        message: str,
        trace: str | None,
        deliveries: int,
    ) -> None:
        # The worker's dead-letter actor moves it (acking it atomically) and answers.
        await self.dead_letters.move(
            Poison(
                self.link.protocol, self.fence,
                GivenUp(entry_id, fields, kind, message, trace, deliveries),
            )
        )
        self.counters.dead_lettered += 1
        self.counters.dead_letters[kind] += 1
        self.counters.last_dead_letter = f"{kind}: {message}"[:300]

    async def undecodable(
        self, conn: Connection, entry_id: bytes, fields: list[bytes], exc: DecodeError,
        deliveries: int,
    ) -> None:
        """Undecodable is the real reason, whatever its count says: dead-letter it now."""
        await self.dead_letter(
            conn, entry_id, fields, f"decode:{exc.kind}", str(exc), None, deliveries
        )

    async def decode_or_dead_letter(
        self, conn: Connection, entry_id: bytes, fields: list[bytes], deliveries: int
    ) -> Any:
        """The event, or MOVED when it could not be decoded (and was dead-lettered)."""
        try:
            return self.decode(fields)
        except DecodeError as exc:
            await self.undecodable(conn, entry_id, fields, exc, deliveries)
            return MOVED

    async def process(
        self,
        conn: Connection,
        ctx: ChildContext,
        entries: list[Any],
        counts: dict[bytes, int] | None = None,
        ack: Callable[[bytes], None] | None = None,
    ) -> None:
        """Decode, handle, then ack or dead-letter each entry in order: the one routine for
        new entries (``counts`` None: first deliveries) and replayed ones (Redis's counts).
        ``ack`` takes the ids to ack (default: the link's commit buffer).

        A failed handling goes to the containment rule (``contain``): it never crashes the
        actor. An entry replayed past ``max_deliveries`` is dead-lettered unhandled: what its
        deliveries caused may have been the end of a whole worker (kill -9 by the OOM killer).
        """
        if counts is None and self.plain and ack is None:
            await self._process_plain(conn, ctx, entries)
            return
        counters = self.counters
        max_deliveries = self.settings.max_deliveries
        handle = self.handle
        for entry_id, fields in entries:
            if ctx.stop_requested:
                return
            self.fence.check(trio.current_time())
            if not fields:
                # Trimmed or deleted while pending: nothing to handle; ack it away.
                counters.trimmed += 1
                (ack or self.link.acks.append)(entry_id)
                continue
            deliveries = counts.get(entry_id, 1) if counts else 1
            event = await self.decode_or_dead_letter(conn, entry_id, fields, deliveries)
            if event is MOVED:
                continue
            if deliveries > max_deliveries:
                await self.dead_letter(
                    conn, entry_id, fields, "max_deliveries",
                    f"delivered {deliveries} times (max_deliveries={max_deliveries}); "
                    f"last error: {counters.last_error}",
                    counters.last_trace, deliveries,
                )
                continue
            started = trio.current_time()
            try:
                result = await handle(conn, entry_id, fields, event)
            except Exception as exc:
                result = await self.contain(conn, ctx, entry_id, fields, exc, deliveries, handle)
                if result is STOPPED:
                    return
            if self.book(result, started):
                (ack or self.link.acks.append)(entry_id)

    def book(self, result: object, started: float) -> bool:
        """Count one settled handling (a sample of its duration); True if it is to be acked."""
        counters = self.counters
        if not counters.processed % SAMPLE_EVERY:
            counters.latencies.append(trio.current_time() - started)
        if result is HANDLED:
            counters.processed += 1
            failures = counters.failures
            failures.board.record_successes(1)
            if failures.streak:
                failures.on_success()
            return True
        return result is SKIPPED

    async def _process_plain(
        self, conn: Connection, ctx: ChildContext, entries: list[Any]
    ) -> None:
        """``_process`` for first deliveries to a handler with no timeout, retries, middleware
        or error hook: the hot path. Locals and a local count: this loop body runs per event."""
        decode = self.decode
        handler = self.handler
        counters = self.counters
        failures = counters.failures
        fence = self.fence
        stopping = ctx.stop_event.is_set
        ack = self.link.acks.append
        streak = failures.streak
        done, sampled = 0, counters.processed  # (sampled: where ``done`` counts on from)
        try:
            for entry_id, fields in entries:
                if stopping():
                    return
                if not done % FENCE_CHECK_EVERY:
                    # A resumed zombie stops within a few events, not after its whole batch
                    # (reading the clock per event cost a tenth of the hot path).
                    fence.check(trio.current_time())
                try:
                    event = decode(fields)
                except DecodeError as exc:
                    await self.undecodable(conn, entry_id, fields, exc, 1)
                    continue
                try:
                    if (sampled + done) % SAMPLE_EVERY:  # (counted across reads)
                        await handler(event)
                    else:
                        started = trio.current_time()
                        await handler(event)
                        counters.latencies.append(trio.current_time() - started)
                except Exception as exc:
                    counters.errors[type(exc).__name__] += 1
                    counters.processed += done  # ours before the failure: evidence for others
                    failures.board.record_successes(done)
                    done = 0
                    result = await self.contain(
                        conn, ctx, entry_id, fields, exc, 1, self._handle_one
                    )
                    if result is STOPPED:
                        return
                    streak = failures.streak
                    if result is MOVED:
                        continue
                if streak:
                    failures.on_success()
                    streak = 0
                ack(entry_id)
                done += 1
        finally:
            counters.processed += done
            failures.board.record_successes(done)

    async def contain(
        self,
        conn: Connection,
        ctx: ChildContext,
        entry_id: bytes,
        fields: list[bytes],
        exc: Exception,
        deliveries: int,
        handle: Handle,
        lane: Hashable | None = None,
    ) -> object:
        """Apply the containment rule (``_core.failures``) to a failed handling, until the
        event is handled (HANDLED or SKIPPED, not yet acked), dead-lettered (MOVED), or a
        stop is requested while backing off (STOPPED: it stays pending, replayed first).
        ``lane``: the event's key when keys are handled concurrently (one key's failures are
        one streak)."""
        counters = self.counters
        failures = counters.failures
        classify = self.containment.classification.classify
        state = counters.state  # RUNNING or REPLAYING: what to show again once it moves on
        if state is PartitionState.BACKING_OFF:
            state = PartitionState.RUNNING
        while True:
            decision = failures.on_failure(entry_id, deliveries, classify(exc), lane)
            # The bounded traceback (~20 us) only for the dead letter that keeps it.
            self.note_failure(
                exc, entry_id, deliveries, trace=decision.action is Action.DEAD_LETTER
            )
            if decision.action is not Action.BACK_OFF:
                counters.state = state
            if decision.action is Action.DEAD_LETTER:
                kind = "poison_error" if decision.reason == "poison-type" else "max_deliveries"
                await self.dead_letter(
                    conn, entry_id, fields, kind, describe_error(exc), counters.last_trace,
                    deliveries,
                )
                failures.on_dead_letter()
                return MOVED
            if decision.action is Action.REDELIVER:
                redelivered = await self._redeliver(conn, entry_id, deliveries)
                if redelivered is None:
                    failures.on_dead_letter()
                    return MOVED
                fields, deliveries = redelivered
            elif not await self._back_off(ctx, decision.delay, decision.reason):
                return STOPPED
            self.fence.check(trio.current_time())
            try:
                result = await handle(conn, entry_id, fields, self.decode(fields))
            except Exception as again:
                exc = again
                continue
            counters.state = state
            if result is HANDLED:
                failures.on_success()
                failures.board.record_successes(1)
            else:  # on_error chose SKIP or DEAD_LETTER: the event is settled all the same
                failures.on_dead_letter()
            return result

    def note_failure(
        self, exc: Exception, entry_id: bytes, deliveries: int, *, trace: bool = True
    ) -> None:
        """Count and show a failed handling: the first of its kind with the whole traceback on
        stderr (the ``actorstream.partition`` logger), then a count now and then. ``trace``:
        keep its bounded traceback for a dead-letter entry."""
        counters = self.counters
        counters.failed += 1
        counters.last_error = describe_error(exc)
        if trace:
            counters.last_trace = format_bounded_traceback(exc)
        label = f"{self.group}[{self.partition}]"
        if self.redis is not None and self.redis.handler_failed(label, exc):
            return  # our own Redis is down: the outage's one line says it, not each partition
        now = trio.current_time()
        action = counters.crash_log.on_failure(type(exc).__name__, now)
        if action is LogAction.FULL:
            log.error(
                "%s[%d] handler crashed on %s%s: %s",
                self.group, self.partition, entry_id.decode(),
                f" (delivery {deliveries})" if deliveries else "",
                counters.last_error, exc_info=exc, extra={"entry_id": entry_id.decode()},
            )
            self.report(
                "crash", f"{self.group}[{self.partition}] {entry_id.decode()}: "
                f"{counters.last_error}",
            )
        elif action is LogAction.COUNT:
            log.error(
                "%s: %d more handler failures not shown (last: %s, on %s[%d])", self.group,
                counters.crash_log.take_count(now), counters.last_error, self.group,
                self.partition,
            )

    async def _redeliver(
        self, conn: Connection, entry_id: bytes, deliveries: int
    ) -> tuple[list[bytes], int] | None:
        """Deliver a failed entry again at once, from our pending list: Redis counts it (and
        the events handled before it are acked in the same round trip). None if it is no
        longer pending (an operator's XGROUP SETID/DELCONSUMER, or trimmed)."""
        read = await self.link.read(conn, _previous_id(entry_id), 1)
        entries = read.entries
        if not entries or entries[0][0] != entry_id:
            self.report(
                "redelivery-lost",
                f"{self.group}[{self.partition}] {entry_id.decode()}: no longer pending",
            )
            return None
        return entries[0][1], read.deliveries.get(entry_id, deliveries + 1)

    async def _back_off(self, ctx: ChildContext, delay: float, reason: str) -> bool:
        """Wait ``delay`` in state backing-off, keeping the lease; False if asked to stop.

        Others succeeding since (``retry_early``) cut the wait short: recovery is prompt."""
        counters = self.counters
        failures = counters.failures
        if counters.state is not PartitionState.BACKING_OFF:
            why = {
                "outage": f"an outage presumed: {failures.streak} event(s) in a row failed here"
                + (", other partitions fail too" if failures.board.failing_elsewhere(
                    self.partition) else ", nothing succeeded elsewhere since"),
                "transient-type": "a transient_errors type",
            }.get(reason, reason)
            quiet = self.redis is not None and self.redis.explains()  # our Redis is down
            log.log(
                logging.INFO if quiet else logging.WARNING,
                "%s[%d] backing off (%s): the same event is retried without spending a "
                "delivery, at most every %gs; last error: %s", self.group, self.partition, why,
                self.settings.backoff_max, counters.last_error,
            )
            self.report(
                "backing-off", f"{self.group}[{self.partition}] ({reason}): "
                f"{counters.last_error}",
            )
        self.counters.state = PartitionState.BACKING_OFF
        counters.backoff = delay
        deadline = trio.current_time() + delay
        early = not self._woke_early  # cut short at most every other wait: never a hot loop
        while not ctx.stop_requested:
            now = trio.current_time()
            if now >= deadline:
                self._woke_early = False
                return True
            if early and failures.retry_early():
                self._woke_early = True
                return True
            with trio.move_on_after(min(0.1, deadline - now)):
                await ctx.wait_stop_requested()
        return False

    def info(self, entry_id: bytes) -> EventInfo:
        return EventInfo(system=self.app, actor=self.group, stream=self.spec.stream.name,
                         partition=self.partition, entry_id=entry_id.decode(),
                         epoch=self.fence.epoch)

    async def _handle_one(
        self, conn: Connection, entry_id: bytes, fields: list[bytes], event: Any
    ) -> object:
        """Handle with middleware, timeout, retries and the error hook.

        Returns HANDLED, SKIPPED (the hook chose SKIP: ack it) or MOVED (the hook chose
        DEAD_LETTER: the move acked it); raises when the failure goes to the containment rule.
        """
        info = self.info(entry_id)
        chain = self.chain
        try:
            if self.tracer is None:
                await self.call(lambda ev: chain(ev, info), event)
            else:
                with _tracing.consumer_span(
                    self.tracer, app=self.app, stream=info.stream, actor=self.group,
                    partition=self.partition, entry_id=info.entry_id, fields=fields,
                ):
                    await self.call(lambda ev: chain(ev, info), event)
            return HANDLED
        except Exception as exc:
            return await self._on_error(conn, entry_id, fields, event, exc, info)

    async def _handle_alone(
        self, conn: Connection, entry_id: bytes, fields: list[bytes], event: Any
    ) -> object:
        """``_handle_one`` for a batch handler: the event as a batch of one."""
        info = self.info(entry_id)
        chain = self.chain
        try:
            await self.call(lambda evs: chain(evs, info), [event])
            return HANDLED
        except Exception as exc:
            return await self._on_error(conn, entry_id, fields, [event], exc, info)

    async def _on_error(
        self, conn: Connection, entry_id: bytes, fields: list[bytes], event: Any,
        exc: Exception, info: EventInfo,
    ) -> object:
        hook = self.spec.on_error
        if hook is None:
            raise exc
        outcome = await hook(event, exc, info)
        if outcome is Outcome.SKIP:
            self.report("skipped", f"{self.group}[{self.partition}] {info.entry_id}: "
                                f"{describe_error(exc)}")
            return SKIPPED
        if outcome is Outcome.DEAD_LETTER:
            await self.dead_letter(
                conn, entry_id, fields, "handler", describe_error(exc),
                format_bounded_traceback(exc), 1,
            )
            return MOVED
        raise exc

    async def call(self, fn: Callable[[Any], Any], arg: Any) -> None:
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
                self.counters.errors[type(error).__name__] += 1
                if attempt >= settings.retries:
                    if error is exc:
                        raise
                    raise error from None
                attempt += 1
                await trio.sleep(settings.retry_backoff * 2 ** (attempt - 1))


def _previous_id(entry_id: bytes) -> str:
    """The greatest stream id before ``entry_id`` (history reads start after their id)."""
    ms, _, seq = entry_id.partition(b"-")
    if int(seq or 0) > 0:
        return f"{int(ms)}-{int(seq) - 1}"
    return f"{int(ms) - 1}-18446744073709551615" if int(ms) > 0 else "0-0"
