"""Events in flight per partition: ``ordering="key"`` (lanes per key) or ``"none"``.

The dispatch rule (``_core.dispatch``) decides what may start and what may be acked; this
module carries it out with three kinds of task in one nursery:

- the reader (``run``): reads while the rule wants entries (so at most ``concurrency`` units
  plus one read are held), decodes each entry once and computes its key once, and commits the
  acks the rule releases on its next fenced round trip (never a round trip per event);
- workers, at most one per unit in flight: a worker takes the next unit the rule allows,
  handles it (containment as in ``handling``: a failing event blocks its own key only, an
  outage pauses the whole partition), reports it finished, and goes on while work is ready.
  A worker starts a spare one before it awaits the handler, only if none is spare, so a
  handler that never waits runs everything in one task (no task per event);
- the fence watcher: a lease that lapses (or is revoked) cancels the handlers in flight at
  once; nothing they did is acked.

A graceful stop starts nothing new, lets the units in flight finish, and commits their acks;
entries read but not started stay pending and are replayed first by the next owner.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import trio

from .._actors import Form
from .._core.crashes import describe_error, format_bounded_traceback
from .._core.dispatch import Dispatch, Held, Ordering, lane_key
from .._core.errors import DecodeError
from .batches import handle_batch
from .counters import SAMPLE_EVERY, Counters
from .handling import FENCE_CHECK_EVERY, HANDLED, STOPPED, Handling
from .reader import Reader, replay_own_pending

__all__ = ["LaneLoop"]

#: With events in flight and nothing new to read: how long their acks may wait to be
#: committed with something else (and how often the reader looks for new entries meanwhile).
LINGER = 0.05
#: How often the fence is checked while handlers are in flight.
FENCE_WATCH = 0.1
#: Entries a worker takes from the rule at once (the others it spawns take them from it).
TAKE = 64


class LaneLoop:
    """The event or batch form with ``ordering="key"`` or ``"none"``."""

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
        )
        self.lane_of = _lane_getter(spec.stream) if settings.ordering is Ordering.KEY else None
        self.plain = handling.plain
        self._taken: deque[Held] = deque()  # taken from the rule, not yet handed to a handler
        self._nursery: trio.Nursery | None = None
        self._error: Exception | None = None
        self._workers = 0  # running worker tasks
        self._spare = 0  # started workers that have not taken a unit yet
        self._successes = 0  # not yet on the health board
        self._wake = trio.Event()
        self._waiting: Callable[[], bool] | None = None  # what the reader waits for
        self._room_at = -1  # held entries at which the reader waiting for room is woken

    async def replay(self) -> None:
        await replay_own_pending(self.reader, self.handling)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._watch_fence)
                try:
                    await self._read()
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

    async def _read(self) -> None:
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
                await self._arrive(read.entries)
                self._kick()
                if len(read.entries) < want:
                    drained = read.entries[-1][0]
            elif dispatch.blocked:
                await self._wait_for(unblocked)  # a worker redelivering needs the connection
            elif dispatch.held or self._workers:
                await reader.linger(read.tail, LINGER)  # acks to come: not a long wait
            elif reader.uncommitted:
                continue  # finished while we read: commit them before a long wait
            elif not await reader.wait_for_append(read.tail):
                return  # (a stop closes the connection: nothing may be left to commit)

    async def _arrive(self, entries: list[Any]) -> None:
        """Decode each entry and compute its key, once; hand them to the rule in order."""
        handling = self.handling
        conn = self.reader.conn
        decode = handling.decode
        arrive = self.dispatch.arrive
        lane_of = self.lane_of
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
            arrive(entry_id, key, event, fields)

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

    # -- workers -------------------------------------------------------------------------------

    def _kick(self) -> None:
        """Start a worker if work is ready and none is spare."""
        if not self._spare and self._nursery is not None and (
            self._taken or self.dispatch.startable()
        ):
            self._spare += 1
            self._workers += 1
            self._nursery.start_soon(self._work_batches if self.batches else self._work)

    def _sync_pause(self) -> None:
        """The containment rule decided an outage (or its end): nothing new starts meanwhile."""
        backing_off = self.counters.failures.backing_off
        if backing_off is not self.dispatch.paused:
            if backing_off:
                self.dispatch.pause()
            else:
                self.dispatch.resume()

    async def _work(self) -> None:
        """A worker of the event form: take entries the rule allows, one handler call each.

        The plain handler's success path is inline (it runs per event)."""
        self._spare -= 1
        dispatch = self.dispatch
        taken = self._taken
        counters = self.counters
        failures = counters.failures
        handler = self.handling.handler
        fence = self.handling.fence
        link = self.reader.link
        stopping = self.reader.ctx.stop_event.is_set
        plain = self.plain
        n = 0  # this worker's events: every 8th checks the fence, every 16th is timed
        try:
            while not stopping():
                if not taken:
                    self._sync_pause()
                    taken.extend(dispatch.take(TAKE))
                    counters.in_flight = dispatch.running
                    if not taken:
                        return
                held = taken.popleft()
                if not self._spare and (taken or dispatch.startable()):
                    self._kick()  # this handler may wait: the next entry gets a worker
                n += 1
                if not plain or not n % SAMPLE_EVERY:
                    await self._event(held)
                else:
                    if not n % FENCE_CHECK_EVERY:
                        fence.check(trio.current_time())
                        self._record_successes()
                    try:
                        await handler(held.event)
                    except Exception as exc:
                        counters.errors[type(exc).__name__] += 1
                        self._settle(held, await self._contain(held, exc), 0.0)
                        continue
                    counters.processed += 1
                    self._successes += 1
                    if failures.streak:
                        failures.on_success()
                    link.acks.append(dispatch.done(held))  # type: ignore[arg-type]
                    if dispatch.held <= self._room_at:  # the reader waits for room: it is here
                        self._room_at = -1
                        self._wake.set()
                    continue
            while taken:  # a graceful stop: what was not handed to a handler stays pending
                dispatch.done(taken.popleft(), ack=False)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._workers -= 1
            counters.in_flight = dispatch.running
            self._maybe_wake()

    async def _event(self, held: Held) -> None:
        """One event the slow way: ``handle`` (middleware, timeout, retries, error hook), or
        a plain call timed for the duration sample; a failure blocks its key while the
        containment rule deals with it."""
        handling = self.handling
        counters = self.counters
        counters.in_flight = self.dispatch.running
        handling.fence.check(trio.current_time())
        self._record_successes()
        started = trio.current_time()
        try:
            if self.plain:
                await handling.handler(held.event)
                result: object = HANDLED
            else:
                result = await handling.handle(
                    self.reader.conn, held.entry_id, held.fields, held.event
                )
        except Exception as exc:
            if self.plain:
                counters.errors[type(exc).__name__] += 1
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
        return await handling.contain(
            self.reader.conn, self.reader.ctx, held.entry_id, held.fields, exc, 1,
            handling.handle, held.key if self.lane_of is not None else None,
        )

    async def _work_batches(self) -> None:
        """A worker of the batch form: one batch per handler call (no key in two, with
        ``"key"``); a failed batch is handled again one event at a time (``handle_batch``)."""
        self._spare -= 1
        dispatch = self.dispatch
        handling = self.handling
        reader = self.reader
        stopping = reader.ctx.stop_event.is_set
        try:
            while not stopping():
                self._sync_pause()
                start = dispatch.start()
                if start is None:
                    return
                self._kick()
                self.counters.in_flight = dispatch.in_flight
                handling.fence.check(trio.current_time())
                items = [(held.entry_id, held.fields, held.event) for held in start.entries]
                acks = await handle_batch(handling, reader.conn, reader.ctx, items)
                reader.commit(dispatch.finish(start.token, acks))
                if self._waiting is not None:
                    self._maybe_wake()
        except Exception as exc:
            self._fail(exc)
        finally:
            self._workers -= 1
            self.counters.in_flight = dispatch.in_flight
            self._maybe_wake()

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
    """The lane of an event: a typed record's key field as it is (one type, so equal values
    are equal keys); otherwise the key normalised as for partitioning (``lane_key``)."""
    if stream.record is not None and isinstance(stream.key, str):
        getter: Callable[[Any], Hashable] = operator.attrgetter(stream.key)
        return getter
    key_of = stream.key_of
    return lambda event: lane_key(key_of(event))
