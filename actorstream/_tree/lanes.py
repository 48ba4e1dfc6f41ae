"""Events in flight per partition: ``ordering="key"`` (lanes per key) or ``"none"``.

The dispatch rule (``_core.dispatch``) decides what may start and what may be acked; this
module carries it out with three kinds of task in one nursery:

- the reader (``_read_role``): reads while the rule wants entries (so at most ``concurrency``
  units plus one read are held), decodes each entry once and computes its key once, and commits
  the acks the rule releases on its next fenced round trip (never a round trip per event). A
  plain handler is started right in the reader's task while its entry may start at once
  (``eager``): one that returns without suspending never enters the rule nor a worker; one
  that suspends (or raises) is finished by this task, which then works on as a worker, while a
  new task takes over reading;
- workers, at most one per unit in flight: a worker handles one entry the rule allows at a
  time (containment as in ``handling``: a failing event blocks its own key only, an outage
  pauses the whole partition) and goes on with the next (``Dispatch.step``: its ack, its key
  freed, the next entry, in one call) while work is ready. A worker starts a spare one before
  it awaits the handler, only if none is spare, so a handler that never waits runs everything
  in one task (no task per event) and one that waits fans out to ``concurrency`` tasks;
- the fence watcher: a lease that lapses (or is revoked) cancels the handlers in flight at
  once; nothing they did is acked.

The batch form's workers (one batch per call, and ``batch_wait``: a batch that is not full
fills first, up to that long) are in ``lanebatches``.

A graceful stop starts nothing new, lets the units in flight finish, and commits their acks;
entries read but not started stay pending and are replayed first by the next owner.
"""

from __future__ import annotations

import contextvars
import operator
import typing
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import trio

from .._actors import Form
from .._core.crashes import describe_error, format_bounded_traceback
from .._core.dispatch import Dispatch, Held, Ordering, lane_key
from .._core.errors import DecodeError
from .counters import SAMPLE_EVERY, Counters
from .eager import Adopted, Eager, finish
from .handling import FENCE_CHECK_EVERY, HANDLED, STOPPED, Handling
from .lanebatches import BatchWorkers
from .reader import Reader, replay_own_pending

__all__ = ["LaneLoop"]

#: With events in flight and nothing new to read: how long their acks may wait to be
#: committed with something else (and how often the reader looks for new entries meanwhile).
LINGER = 0.05
#: How often the fence is checked while handlers are in flight.
FENCE_WATCH = 0.1


class LaneLoop(BatchWorkers):
    """The event or batch form with ``ordering="key"`` or ``"none"`` (the batch form's
    workers: ``lanebatches``)."""

    def __init__(self, reader: Reader, handling: Handling, counters: Counters) -> None:
        self.reader = reader
        self.handling = handling
        self.counters = counters
        spec = handling.spec
        settings = handling.settings
        self.batches = spec.form is Form.BATCH
        self.dispatch = Dispatch(
            settings.ordering,
            settings.in_flight(spec.form),
            settings.batch_size if self.batches else 1,
            reader.link.acks,
            settings.batch_wait if self.batches else 0.0,
        )
        self.lane_of = _lane_getter(spec.stream) if settings.ordering is Ordering.KEY else None
        self.plain = handling.plain
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._context = contextvars.copy_context()  # workers start in it (``_kick``)
        self._read_over = trio.Event()  # the reader's role is over (a stop)
        self.eager = (
            Eager(self.dispatch, handling.handler, handling.decode, self.lane_of,
                  handling.fence, counters)
            if self.plain and not self.batches else None
        )
        self._error: Exception | None = None
        self._workers = 0  # running worker tasks
        self._spare = 0  # started workers that have not taken a unit yet
        self._filler = False  # a worker waits for a batch to fill (``lanebatches``)
        self._fill_wake = trio.Event()
        self._successes = 0  # not yet on the health board
        self._wake = trio.Event()
        self._waiting: Callable[[], bool] | None = None  # what the reader waits for
        self._room_at = -1  # held entries at which the reader waiting for room is woken

    async def replay(self) -> None:
        await replay_own_pending(self.reader, self.handling)

    async def run(self) -> None:
        self._read_over = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._context = contextvars.copy_context()
                nursery.start_soon(self._watch_fence)
                nursery.start_soon(self._read_role)
                try:
                    await self._read_over.wait()  # a stop (or a failure: cancelled then)
                    self._stopping = True  # start nothing new: the units in flight finish
                    self._sync_pause()
                    while self._workers:  # a graceful stop: let the units in flight finish
                        await self._wait_for(lambda: not self._workers)
                except Exception as exc:
                    self._fail(exc)
                nursery.cancel_scope.cancel()
        finally:
            self._record_successes()
            self.counters.in_flight = 0
        if self._error is not None:
            raise self._error

    # -- the reader ----------------------------------------------------------------------------

    async def _read_role(self) -> None:
        """Read until a stop; a task that gives reading up for a handler it started eagerly
        (``_arrive``) finishes that handler and goes on as a worker."""
        adopted = None
        try:
            adopted = await self._read()
        except Exception as exc:
            self._fail(exc)
        finally:
            if adopted is None:
                self._read_over.set()
        if adopted is not None:
            await self._adopt(adopted)

    async def _read(self) -> Adopted | None:
        dispatch = self.dispatch
        reader = self.reader
        ctx = reader.ctx
        batch = reader.batch_size
        room = dispatch.concurrency * dispatch.unit

        def has_room() -> bool:
            return dispatch.held <= room

        def unblocked() -> bool:
            return not dispatch.blocked

        drained: bytes | None = None  # the last read emptied the partition, up to this id
        while not ctx.stop_requested:
            want = dispatch.want(batch)
            if not want:
                await self._wait_for(has_room, room)  # enough held: wait for units to finish
                continue
            if drained is not None and not dispatch.blocked and not reader.writes_pending:
                # Wait for an append at once; what finishes meanwhile rides on the next read.
                await reader.linger(drained, LINGER)
            drained = None
            read = await reader.read_new(want)
            if read.entries:
                adopted = await self._arrive(read.entries)
                self._kick()
                if adopted is not None:
                    return adopted  # a new task reads on (started by ``_arrive``)
                if len(read.entries) < want:
                    drained = read.entries[-1][0]
            elif dispatch.blocked:
                await self._wait_for(unblocked)  # a worker redelivering needs the connection
            elif dispatch.held or self._workers:
                await reader.linger(read.tail, LINGER)  # acks to come: not a long wait
            elif reader.uncommitted:
                continue  # finished while we read: commit them before a long wait
            elif not await reader.wait_for_append(read.tail):
                return None  # (a stop closes the connection: nothing may be left to commit)
        return None

    async def _arrive(self, entries: list[Any]) -> Adopted | None:
        """Decode each entry and compute its key, once. A plain handler is started at once
        while it may start and returns at once (``eager``); the rest go to the rule in order,
        as one batch. A call that did not return at once is returned: this task finishes it,
        and a new task takes over reading."""
        adopted = None
        if self.eager is not None:
            self._sync_pause()
            looked, handled, adopted = self.eager.run(entries, self.reader.ctx.stop_event.is_set)
            self._book(handled)
            if looked:
                entries = entries[looked:]
        if entries:
            await self._enqueue(entries)
        if adopted is not None and self._nursery is not None:
            self._workers += 1  # this task, until the call is over
            self._context.run(self._nursery.start_soon, self._read_role)
        return adopted

    async def _enqueue(self, entries: list[Any]) -> None:
        """Entries for the rule, in order: each decoded and its key computed, once (one that
        cannot be decoded, or has no key, is dead-lettered)."""
        handling = self.handling
        conn = self.reader.conn
        decode = handling.decode
        lane_of = self.lane_of
        arrived: list[Held] = []
        add = arrived.append
        for entry_id, fields in entries:
            try:
                event = decode(fields)
                key = lane_of(event) if lane_of is not None else None
            except DecodeError as exc:
                await handling.undecodable(conn, entry_id, fields, exc, 1)
                continue
            except Exception as exc:  # the stream's key function failed: it has no lane
                await handling.dead_letter(
                    conn, entry_id, fields, "key", describe_error(exc),
                    format_bounded_traceback(exc), 1,
                )
                continue
            add((entry_id, key, event, fields))
        self.dispatch.arrive_many(arrived)

    async def _wait_for(self, condition: Callable[[], bool], room_at: int = -1) -> None:
        """Until ``condition`` holds after a unit finished or a worker ended (workers check
        it; per event only ``room_at``, a number), or at most ``LINGER`` (a stop is noticed)."""
        self._wake = trio.Event()
        self._waiting = condition
        self._room_at = room_at
        try:
            with trio.move_on_after(LINGER):
                await self._wake.wait()
        finally:
            self._waiting = None
            self._room_at = -1

    def _maybe_wake(self) -> None:
        if self._waiting is not None and self._waiting():
            self._wake.set()

    def _retired(self, in_flight: int) -> None:
        """A worker ends: the books, and the reader woken if it waits for room."""
        self._workers -= 1
        self.counters.in_flight = in_flight
        self._maybe_wake()

    # -- workers -------------------------------------------------------------------------------

    def _kick(self) -> None:
        """Start a worker if work is ready and none is spare (the batch form: ``lanebatches``)."""
        if self.batches:
            self._kick_batches()
        elif not self._spare and self.dispatch.startable():
            self._spawn(self._work)

    def _spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        """Start a worker in the context the loop started in, never one a handler started in
        this task may have changed (a table's scope)."""
        if self._nursery is not None:
            self._spare += 1
            self._workers += 1
            self._context.run(self._nursery.start_soon, work)

    async def _adopt(self, adopted: Adopted) -> None:
        """Finish a handler call the reader started and that did not return at once, in the
        task that started it; then go on as a worker."""
        held, coro, trap, error = adopted
        try:
            if coro is not None:
                try:
                    await finish(coro, trap)
                except Exception as exc:
                    error = exc
            if error is None:
                self._book(1)
                if self.counters.failures.streak:
                    self.counters.failures.on_success()
                    self._sync_pause()
                held_next = self.dispatch.step(held)
            else:
                held_next = await self._failed(held, error, 0)
            self.counters.in_flight = self.dispatch.running
            if held_next is not None:
                await self._work_plain(held_next)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._retired(self.dispatch.running)

    def _sync_pause(self) -> None:
        """Start nothing new during an outage (the containment rule decided it) or a stop."""
        pause = self._stopping or self.counters.failures.backing_off
        if pause is not self.dispatch.paused:
            if pause:
                self.dispatch.pause()
                self._wake_filler()  # a batch that fills starts no sooner: its wait ends
            else:
                self.dispatch.resume()

    async def _work(self) -> None:
        """A worker of the event form: handle entries the rule allows, one at a time, until
        none may start. Before it awaits a handler it starts a spare worker if none is spare
        and more may start (a handler that waits fans out; one that never waits runs them
        all in this task)."""
        self._spare -= 1
        try:
            self._sync_pause()
            held = self.dispatch.next()
            self.counters.in_flight = self.dispatch.running
            if held is not None:
                await (self._work_plain(held) if self.plain else self._work_chained(held))
        except Exception as exc:
            self._fail(exc)
        finally:
            self._retired(self.dispatch.running)

    async def _work_plain(self, held: Held | None) -> None:
        """The plain handler's loop: per event only the call and ``step`` (its ack, and the
        next entry); every ``FENCE_CHECK_EVERY``-th event goes through ``_checked`` (the
        fence, the books, a duration sample)."""
        dispatch = self.dispatch
        step = dispatch.step
        failures = self.counters.failures
        handler = self.handling.handler
        every = FENCE_CHECK_EVERY
        n = 0  # this worker's events
        ok = 0  # handled, not yet counted
        try:
            while held is not None:
                if not self._spare and dispatch.startable():
                    self._kick()  # this handler may wait: the next entry gets a worker
                n += 1
                if n % every:
                    try:
                        await handler(held[2])
                    except Exception as exc:
                        held = await self._failed(held, exc, ok)
                        ok = 0
                        continue
                else:
                    self._checked(ok, n)
                    ok = 0
                    if not await self._sampled(held, not n % SAMPLE_EVERY):
                        held = self._next()
                        continue
                ok += 1
                if failures.streak:
                    failures.on_success()
                    self._sync_pause()
                held = step(held)
        finally:
            self._book(ok)

    def _checked(self, handled: int, n: int) -> None:
        """Every few events of a worker: the fence (a resumed zombie stops within a few
        events), the books, an outage or its end, and the reader waiting for room."""
        self.handling.fence.check(trio.current_time())
        self._book(handled)
        self._sync_pause()
        self.counters.in_flight = self.dispatch.running
        if self._waiting is not None:
            self._maybe_wake()

    async def _sampled(self, held: Held, timed: bool) -> bool:
        """A plain handler call, timed if ``timed``; False if it failed (settled here)."""
        started = trio.current_time() if timed else 0.0
        try:
            await self.handling.handler(held[2])
        except Exception as exc:
            self.counters.errors[type(exc).__name__] += 1
            self._settle(held, await self._contain(held, exc), 0.0)
            return False
        if timed:
            self.counters.latencies.append(trio.current_time() - started)
        return True

    async def _failed(self, held: Held, exc: Exception, handled: int) -> Held | None:
        """A plain handler call failed (``handled`` before it, not yet counted): the
        containment rule settles it; the next entry."""
        self._book(handled)  # ours before the failure: evidence for the rule
        self.counters.errors[type(exc).__name__] += 1
        self._settle(held, await self._contain(held, exc), 0.0)
        return self._next()

    def _next(self) -> Held | None:
        self._sync_pause()
        return self.dispatch.next()

    async def _work_chained(self, held: Held | None) -> None:
        """The loop of a handler with middleware, timeout, retries or an error hook."""
        dispatch = self.dispatch
        while held is not None:
            if not self._spare and dispatch.startable():
                self._kick()
            await self._event(held)
            held = self._next()

    def _book(self, handled: int) -> None:
        """Count events handled by a worker's fast path (for statistics and the health
        board: evidence that handlers work)."""
        if handled:
            self.counters.processed += handled
            self._successes += handled
            self._record_successes()

    async def _event(self, held: Held) -> None:
        """One event through ``handle`` (middleware, timeout, retries, error hook); a
        failure blocks its key while the containment rule deals with it."""
        handling = self.handling
        self.counters.in_flight = self.dispatch.running
        handling.fence.check(trio.current_time())
        self._record_successes()
        started = trio.current_time()
        try:
            entry_id, _, event, fields = held
            result = await handling.handle(self.reader.conn, entry_id, fields, event)
        except Exception as exc:
            result = await self._contain(held, exc)
        self._settle(held, result, started)

    def _settle(self, held: Held, result: object, started: float) -> None:
        """Book one handling and tell the rule; its ack goes to the commit buffer at once:
        a redelivery's round trip commits it too, with its handler's table writes."""
        counters = self.counters
        if result is HANDLED:
            counters.processed += 1
            self._successes += 1
            if counters.failures.streak:
                counters.failures.on_success()
            if started:
                counters.latencies.append(trio.current_time() - started)
            ack = True
        else:
            ack = result is not STOPPED and self.handling.book(
                result, started or trio.current_time()
            )
        entry_id = self.dispatch.done(held, ack)
        if entry_id is not None:
            self.reader.link.acks.append(entry_id)
        counters.in_flight = self.dispatch.running
        self._maybe_wake()

    async def _contain(self, held: Held, exc: Exception) -> object:
        self._record_successes()  # ours before the failure: evidence for the rule
        self.dispatch.block(held)
        handling = self.handling
        entry_id, key, _, fields = held
        return await handling.contain(
            self.reader.conn, self.reader.ctx, entry_id, fields, exc, 1, handling.handle,
            key if self.lane_of is not None else None,
        )

    def _record_successes(self) -> None:
        if self._successes:
            self.counters.failures.board.record_successes(self._successes)
            self._successes = 0

    # -- failure and the fence -----------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        """A runtime failure (fenced, Redis gone): cancel everything in flight, raise it."""
        if self._error is None:
            self._error = exc
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _watch_fence(self) -> None:
        fence = self.handling.fence
        try:
            while True:
                now = trio.current_time()
                fence.check(now)
                await trio.sleep_until(min(fence.deadline, now + FENCE_WATCH))
        except Exception as exc:
            self._fail(exc)


def _lane_getter(stream: Any) -> Callable[[Any], Hashable]:
    """The lane of an event: a typed record's key field as it is when the field has one type
    whose equal values are equal keys (``int``, ``str`` or ``bytes``); otherwise the key
    normalised as for partitioning (``lane_key``: ``1`` and ``"1"`` share a partition, and a
    lane)."""
    if stream.record is not None and isinstance(stream.key, str):
        try:
            hint = typing.get_type_hints(stream.record).get(stream.key)
        except Exception:  # a hint naming a local type: normalise, to be safe
            hint = None
        if hint in (int, str, bytes):
            getter: Callable[[Any], Hashable] = operator.attrgetter(stream.key)
            return getter
    key_of = stream.key_of
    return lambda event: lane_key(key_of(event))
