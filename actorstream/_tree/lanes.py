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

from typing import Any

import trio

from .._actors import Form
from .._core.crashes import describe_error, format_bounded_traceback
from .._core.dispatch import Dispatch, Ordering, Start, lane_key
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
        self.keyed = settings.ordering is Ordering.KEY
        self.key_of = spec.stream.key_of
        self._nursery: trio.Nursery | None = None
        self._error: Exception | None = None
        self._workers = 0  # running worker tasks
        self._spare = 0  # started workers that have not taken a unit yet
        self._handled = 0  # for the fence check and duration samples
        self._wake = trio.Event()
        self._waiting = False

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
                        await self._wait_change()
                except Exception as exc:
                    self._fail(exc)
                nursery.cancel_scope.cancel()
        finally:
            self.reader.commit(self.dispatch.take_acks())
            self.counters.in_flight = 0
        if self._error is not None:
            raise self._error

    # -- the reader ----------------------------------------------------------------------------

    async def _read(self) -> None:
        dispatch = self.dispatch
        reader = self.reader
        ctx = reader.ctx
        batch = reader.batch_size
        while not ctx.stop_requested:
            want = dispatch.want(batch)
            if not want:
                await self._wait_change()  # enough held: wait for a unit to finish
                continue
            reader.commit(dispatch.take_acks())
            read = await reader.read_new(want)
            if read.entries:
                await self._arrive(read.entries)
                self._kick()
            elif dispatch.blocked:
                await self._wait_change()  # a worker redelivering needs the connection
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
        key_of = self.key_of if self.keyed else None
        for entry_id, fields in entries:
            try:
                event = decode(fields)
                key = lane_key(key_of(event)) if key_of is not None else None
            except DecodeError as exc:
                await handling.undecodable(conn, entry_id, fields, exc, 1)
                continue
            except Exception as exc:  # the stream's key function failed: it has no lane
                await handling.dead_letter(
                    conn, entry_id, fields, "key", describe_error(exc),
                    format_bounded_traceback(exc), 1,
                )
                continue
            arrive(entry_id, key, (fields, event))

    async def _wait_change(self) -> None:
        """Until a unit finishes or a worker ends (at most ``LINGER``: a stop is noticed)."""
        self._wake = trio.Event()
        self._waiting = True
        try:
            with trio.move_on_after(LINGER):
                await self._wake.wait()
        finally:
            self._waiting = False

    # -- workers -------------------------------------------------------------------------------

    def _kick(self) -> None:
        """Start a worker if work is ready and none is spare."""
        if not self._spare and self.dispatch.startable() and self._nursery is not None:
            self._spare += 1
            self._workers += 1
            self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        self._spare -= 1
        dispatch = self.dispatch
        failures = self.counters.failures
        stopping = self.reader.ctx.stop_event.is_set
        unit = self._batch if self.batches else self._event
        try:
            while not stopping():
                if failures.backing_off is not dispatch.paused:  # an outage began or ended
                    if failures.backing_off:
                        dispatch.pause()
                    else:
                        dispatch.resume()
                start = dispatch.start()
                if start is None:
                    return
                self.counters.in_flight = dispatch.in_flight
                self._kick()
                await unit(start)
                self.counters.in_flight = dispatch.in_flight
                if self._waiting:
                    self._wake.set()
        except Exception as exc:
            self._fail(exc)
        finally:
            self._workers -= 1
            if self._waiting:
                self._wake.set()

    async def _event(self, start: Start) -> None:
        """One event: the plain call, or ``handle`` (middleware, timeout, retries, error
        hook); a failure blocks its key while the containment rule deals with it."""
        handling = self.handling
        counters = self.counters
        token, entries = start
        entry_id, _, (fields, event) = entries[0]
        n = self._handled = self._handled + 1
        if not n % FENCE_CHECK_EVERY:
            handling.fence.check(trio.current_time())
        sample = not n % SAMPLE_EVERY
        started = trio.current_time() if sample else 0.0
        try:
            if handling.plain:
                await handling.handler(event)
            else:
                result = await handling.handle(self.reader.conn, entry_id, fields, event)
                if result is not HANDLED:
                    self._finish(token, [entry_id] if handling.book(result, started) else ())
                    return
        except Exception as exc:
            if handling.plain:
                counters.errors[type(exc).__name__] += 1
            await self._contain(start, exc, started)
            return
        counters.processed += 1
        failures = counters.failures
        failures.board.record_successes(1)
        if failures.streak:
            failures.on_success()
        if sample:
            counters.latencies.append(trio.current_time() - started)
        self._finish(token, (entry_id,))

    async def _contain(self, start: Start, exc: Exception, started: float) -> None:
        handling = self.handling
        token, entries = start
        entry_id, key, (fields, _event) = entries[0]
        self.dispatch.block(token)
        result = await handling.contain(
            self.reader.conn, self.reader.ctx, entry_id, fields, exc, 1, handling.handle,
            key if self.keyed else None,
        )
        acked = result is not STOPPED and handling.book(result, started or trio.current_time())
        self._finish(token, (entry_id,) if acked else ())

    async def _batch(self, start: Start) -> None:
        """One batch (no key of it in another batch in flight, with ``"key"``)."""
        handling = self.handling
        handling.fence.check(trio.current_time())
        items = [(held.entry_id, held.item[0], held.item[1]) for held in start.entries]
        reader = self.reader
        acks = await handle_batch(handling, reader.conn, reader.ctx, items)
        self._finish(start.token, acks)

    def _finish(self, token: int, acks: tuple[bytes, ...] | list[bytes] = ()) -> None:
        """A unit is over: what the rule releases goes to the commit buffer at once, so any
        round trip (a redelivery's too) commits it with the table writes of its handler."""
        dispatch = self.dispatch
        dispatch.finish(token, acks)
        self.reader.commit(dispatch.take_acks())

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
