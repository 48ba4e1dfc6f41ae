"""Middleware and error hooks: composable code around handling.

A middleware is ``async def mw(event, info, call_next)``; it runs code before and after
``await call_next(event)`` (enrichment: pass a different event), and may catch what the handler
raised (route the failure to its own stream or log, then return normally: the event then counts as
handled and is acked). Order: system-wide middleware (``@system.middleware``, in registration
order) wraps the actor's own (``middleware=[...]``, in list order), which wraps the handler; the
first registered is the outermost. For batch actors ``event`` is the list of events.

An error hook, ``on_error=async def hook(event, exc, info) -> Outcome | None``, runs when the
handler (after its middleware, timeout and in-process retries) still failed:

- ``Outcome.CRASH`` (or ``None``): the failure goes to the containment rule: the event is
  redelivered (and dead-lettered after ``max_deliveries``), or the partition backs off in an
  outage (docs/dead-letters.md, "Poison or outage");
- ``Outcome.DEAD_LETTER``: move it to the dead-letter stream now, with the error, and go on;
- ``Outcome.SKIP``: ack it and go on (you handled the failure yourself).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from attrs import frozen


class Outcome(enum.Enum):
    CRASH = "crash"
    DEAD_LETTER = "dead_letter"
    SKIP = "skip"


@frozen
class EventInfo:
    """Where an event comes from; given to middleware and error hooks."""

    system: str
    actor: str
    stream: str
    partition: int
    entry_id: str
    epoch: int


Next = Callable[[Any], Awaitable[None]]


class Middleware(Protocol):
    def __call__(self, event: Any, info: EventInfo, call_next: Next, /) -> Awaitable[None]: ...


class ErrorHook(Protocol):
    def __call__(
        self, event: Any, exc: Exception, info: EventInfo, /
    ) -> Awaitable[Outcome | None]: ...


Chain = Callable[[Any, EventInfo], Awaitable[None]]


def compose(handler: Callable[[Any], Awaitable[Any]], middleware: Sequence[Middleware]) -> Chain:
    """One callable running ``middleware[0]`` outermost, the handler innermost (built once)."""

    async def innermost(event: Any, info: EventInfo) -> None:
        await handler(event)

    chain: Chain = innermost
    for mw in reversed(middleware):
        chain = _wrap(mw, chain)
    return chain


def _wrap(mw: Middleware, inner: Chain) -> Chain:
    async def layer(event: Any, info: EventInfo) -> None:
        async def call_next(ev: Any) -> None:
            await inner(ev, info)

        await mw(event, info, call_next)

    return layer
