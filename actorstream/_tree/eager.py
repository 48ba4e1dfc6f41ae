"""Handlers started eagerly, in the task that read their entries (``ordering="key"``/``"none"``).

A handler that returns without ever suspending (CPU-bound work, a cache hit) needs no task of
its own, nor a place in the dispatch rule: while an entry may start at once (nothing waits
before it, its key is free, there is room; ``Dispatch.may_start_now``), the reader starts its
handler with ``coro.send(None)``. If it returns, the entry is acked like one handled by a
worker, and it never entered the rule. If it suspends or raises, the entry is marked in flight
(``Dispatch.start_now``) and handed back: the coroutine stays in the task that started it
(``finish`` drives it on as ``await`` would), so its cancel scopes, and trio's traps naming the
current task, stay valid; that task stops reading and becomes a worker, and a new task takes
over reading (``lanes``). A coroutine is never moved between tasks.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Hashable
from typing import Any, NamedTuple, cast

import trio

from .._core.dispatch import Dispatch, Held
from .._core.fence import Fence
from .counters import SAMPLE_EVERY, Counters
from .handling import FENCE_CHECK_EVERY

__all__ = ["Adopted", "Eager", "finish"]


class Adopted(NamedTuple):
    """A handler call that did not return at once: its entry (in flight in the rule), and the
    coroutine suspended at ``trap``, or the ``error`` it raised."""

    held: Held
    coro: Coroutine[Any, Any, Any] | None
    trap: Any
    error: Exception | None


@types.coroutine
def finish(coro: Coroutine[Any, Any, Any], trap: Any) -> Generator[Any, Any, Any]:
    """Drive ``coro``, suspended at ``trap`` by its first ``send``, to its end, as ``await``
    would have: what trio sends or throws in goes to it, what it yields goes up to trio."""
    while True:
        try:
            value = yield trap
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                trap = coro.send(value)
            except StopIteration as stop:
                return stop.value


class Eager:
    """Runs a read batch's handlers at once, in stream order, while they may start and return."""

    __slots__ = ("acks", "counters", "decode", "dispatch", "fence", "handler", "lane_of", "seen")

    def __init__(
        self,
        dispatch: Dispatch,
        handler: Callable[[Any], Awaitable[Any]],
        decode: Callable[[Any], Any],
        lane_of: Callable[[Any], Hashable] | None,
        fence: Fence,
        counters: Counters,
    ) -> None:
        self.dispatch = dispatch
        # A plain handler is an ``async def`` (or an object whose ``__call__`` is): a call
        # returns a coroutine.
        self.handler = cast(Callable[[Any], Coroutine[Any, Any, Any]], handler)
        self.decode = decode
        self.lane_of = lane_of
        self.fence = fence
        self.counters = counters
        self.acks = dispatch.acks  # the commit buffer
        #: Entries read so far: every ``SAMPLE_EVERY``-th call is timed (counted across reads:
        #: with one entry per read, not every call).
        self.seen = 0

    def run(
        self, entries: list[Any], stopping: Callable[[], bool]
    ) -> tuple[int, int, Adopted | None]:
        """Handle ``entries`` from the first while each may start now and its handler returns
        at once. Returns how many were looked at (the rest, from there, go to the rule), how
        many were handled, and the call that did not return at once (its entry among those
        looked at), if any. An entry that cannot be decoded, or has no key, is left to the
        rule's path (which dead-letters it)."""
        busy = self.dispatch.lanes_if_free()  # (what ``may_start_now`` asks, per run)
        if busy is False:
            return 0, 0, None
        decode, lane_of, handler = self.decode, self.lane_of, self.handler
        ack = self.acks.append
        failures = self.counters.failures
        latencies = self.counters.latencies
        fence = self.fence
        done = 0
        seen = self.seen
        self.seen = seen + len(entries)  # (once per read; those left to the rule count too)
        for i, (entry_id, fields) in enumerate(entries):
            if stopping():
                return i, done, None
            if not i % FENCE_CHECK_EVERY:  # (the first of a read, whatever came before)
                fence.check(trio.current_time())
            try:
                event = decode(fields)
                key = lane_of(event) if lane_of is not None else None
            except Exception:
                return i, done, None
            if busy is not None and key in busy:  # (type narrowing: a dict here)
                return i, done, None
            timed = not (seen + i) % SAMPLE_EVERY
            started = trio.current_time() if timed else 0.0
            coro = handler(event)
            try:
                trap = coro.send(None)
            except StopIteration:
                pass
            except Exception as exc:
                held = self.dispatch.start_now((entry_id, key, event, fields))
                return i + 1, done, Adopted(held, None, None, exc)
            else:
                held = self.dispatch.start_now((entry_id, key, event, fields))
                return i + 1, done, Adopted(held, coro, trap, None)
            if timed:
                latencies.append(trio.current_time() - started)
            if failures.streak:
                failures.on_success()
            ack(entry_id)
            done += 1
        return len(entries), done, None
