"""What a supervisor hands its children and shows: restart strategies, the child context,
statistics; and the records it keeps per child and per restart group (used by ``supervisor``).

The tree imports these values from ``supervisor``, whose ``__all__`` lists them: one list.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager

import attrs
import trio
from attrs import frozen

from .._core.policy import Backoff, RestartIntensity


class Strategy(enum.Enum):
    """Which children restart when one crashes (Erlang's restart strategies)."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    """When a child that ended is started again."""

    PERMANENT = "permanent"  # always, even after a normal return
    TRANSIENT = "transient"  # only after a crash
    TEMPORARY = "temporary"  # never


class ChildState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class ChildContext:
    """What a child function gets: who it is, how often it restarted, and stop requests."""

    def __init__(self, child_id: Hashable, restarts: int = 0) -> None:
        self.child_id = child_id
        self.restarts = restarts
        self.status: str | None = None
        self._stop = trio.Event()
        self._on_stop: set[trio.CancelScope] = set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_event(self) -> trio.Event:
        """The event set when a graceful stop is requested (for hot loops and waits)."""
        return self._stop

    async def wait_stop_requested(self) -> None:
        await self._stop.wait()

    def set_status(self, status: str | None) -> None:
        """A free-form status shown in ``statistics()`` (e.g. ``"replaying"``)."""
        self.status = status

    @contextmanager
    def cancel_on_stop(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that a graceful stop cancels (at once if one was requested already):
        an interruptible wait without a task to watch for the stop."""
        with trio.CancelScope() as scope:
            if self._stop.is_set():
                scope.cancel()
            self._on_stop.add(scope)
            try:
                yield scope
            finally:
                self._on_stop.discard(scope)

    def _request_stop(self) -> None:
        self._stop.set()
        for scope in self._on_stop:
            scope.cancel()


ChildFn = Callable[[ChildContext], Awaitable[None]]


@frozen
class ChildStatistics:
    child_id: Hashable
    state: ChildState
    restart: Restart
    restarts: int
    last_error: str | None
    current_backoff: float
    started_at: float | None
    status: str | None


@frozen
class SupervisorStatistics:
    name: str
    strategy: Strategy
    children: tuple[ChildStatistics, ...]
    total_restarts: int
    gave_up: bool
    running: bool


@attrs.define(eq=False)
class RestartGroup:
    """Children restarted together, in start order, once ``deadline`` passed and none runs."""

    deadline: float
    members: list[Child] = attrs.Factory(list)
    waiting: set[Child] = attrs.Factory(set)  # still shutting down


@attrs.define(eq=False)
class Child:
    child_id: Hashable
    fn: ChildFn
    restart: Restart
    backoff: Backoff
    state: ChildState = ChildState.STARTING
    restarts: int = 0
    launched: bool = False
    last_error: str | None = None
    started_at: float | None = None
    generation: int = 0
    scope: trio.CancelScope | None = None  # not None while its task is alive
    ctx: ChildContext | None = None
    group: RestartGroup | None = None
    removing: bool = False
    stopped: trio.Event = attrs.Factory(trio.Event)
    # Only with per_child_intensity: this child's own MaxR-in-MaxT window and its crashes.
    intensity: RestartIntensity | None = None
    crashes: deque[tuple[float, Exception]] = attrs.Factory(deque)


@frozen
class Exited:
    child: Child
    generation: int
    error: Exception | None
