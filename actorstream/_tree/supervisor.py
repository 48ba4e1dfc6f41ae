"""Supervisor: the trio mechanics of restarts (the decisions live in ``_core.policy``).

One task, the supervisor loop inside ``run()``, makes every restart decision; each child runs in
its own task and ``CancelScope`` inside the nursery that ``run()`` owns, and reports how it ended
through a memory channel. Backoff deadlines are timers of that loop, so they follow
``trio.current_time()`` and tests run on ``MockClock``. The values it hands out and its per-child
records live in ``children`` (re-exported here).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Hashable
from typing import TypeAlias

import trio

from .._core.crashes import describe_error
from .._core.errors import ConfigError, SupervisorGaveUp
from .._core.policy import Backoff, RestartIntensity, RestartPolicy
from .children import (
    Child,
    ChildContext,
    ChildFn,
    ChildState,
    ChildStatistics,
    Exited,
    Restart,
    RestartGroup,
    Strategy,
    SupervisorStatistics,
)

__all__ = [
    "ChildContext",
    "ChildFn",
    "ChildState",
    "ChildStatistics",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorStatistics",
]


def _check_grace(grace: float) -> None:
    if math.isnan(grace) or grace < 0:
        raise ValueError(f"grace must be >= 0 seconds, got {grace!r}")


_DEFAULT_POLICY = RestartPolicy()
_Event: TypeAlias = Exited | None  # None only wakes the loop up


class Supervisor:
    """An Erlang-style supervisor for trio tasks.

    ``run()`` may be called again after it returned or raised (a parent supervisor restarting a
    nested one does exactly that): registered children start afresh, with fresh intensity.

    ``per_child_intensity=True`` gives every child its own restart intensity (MaxR in MaxT of
    ``policy``) instead of one shared by all: one crash-looping child cannot use up its
    siblings' restarts. Past its own intensity the supervisor still gives up, naming the child.
    """

    def __init__(
        self,
        name: str,
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        policy: RestartPolicy = _DEFAULT_POLICY,
        rng: random.Random | None = None,
        per_child_intensity: bool = False,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise ConfigError(f"strategy must be a Strategy, got {strategy!r}")
        if not isinstance(policy, RestartPolicy):
            raise ConfigError(f"policy must be a RestartPolicy, got {policy!r}")
        self._name = name
        self._strategy = strategy
        self._policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._per_child = per_child_intensity
        self._children: dict[Hashable, Child] = {}
        self._groups: list[RestartGroup] = []
        self._to_start: list[Child] = []
        self._intensity = RestartIntensity.from_policy(policy)
        self._crashes: deque[tuple[float, Exception]] = deque()
        self._total_restarts = 0
        self._gave_up = False
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._send: trio.MemorySendChannel[_Event] | None = None
        self._done: trio.Event | None = None
        self._running = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def policy(self) -> RestartPolicy:
        return self._policy

    # ---- public API -------------------------------------------------------------------------

    def start_child(
        self, child_id: Hashable, fn: ChildFn, *, restart: Restart = Restart.PERMANENT
    ) -> None:
        """Register a child; it starts now if ``run()`` is running, else when it starts."""
        if child_id in self._children:
            raise ValueError(f"supervisor {self._name!r} already has a child {child_id!r}")
        if not isinstance(restart, Restart):
            raise ConfigError(f"restart must be a Restart, got {restart!r}")
        if self._stopping:
            raise RuntimeError(f"supervisor {self._name!r} is stopping")
        child = Child(child_id, fn, restart, Backoff(self._policy))
        if self._per_child:
            child.intensity = RestartIntensity.from_policy(self._policy)
        self._children[child_id] = child
        if self._nursery is not None:
            self._to_start.append(child)
            self._wake()

    async def stop_child(self, child_id: Hashable, *, grace: float = 5.0) -> None:
        """Ask a child to stop, cancel it after ``grace`` seconds, and remove it.

        Not a crash. Returns once the child's task has ended; an unknown id is already stopped.
        """
        _check_grace(grace)
        child = self._children.get(child_id)
        if child is None:
            return
        self._request_stop(child, grace)
        await child.stopped.wait()

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop every child gracefully, in reverse start order; then ``run()`` returns normally."""
        _check_grace(grace)
        already = self._stopping
        self._stopping = True
        nursery, done = self._nursery, self._done
        if nursery is None or done is None:
            for child in reversed(list(self._children.values())):
                self._detach(child)
                self._remove(child, ChildState.STOPPED)
            return
        if not already:
            # In the supervisor's own nursery, so the stop completes even if our caller is
            # cancelled (e.g. a child stopping its own supervisor).
            nursery.start_soon(self._stop_all, grace)
        await done.wait()

    def children(self) -> list[Hashable]:
        return list(self._children)

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            name=self._name,
            strategy=self._strategy,
            children=tuple(
                ChildStatistics(
                    child_id=c.child_id,
                    state=c.state,
                    restart=c.restart,
                    restarts=c.restarts,
                    last_error=c.last_error,
                    current_backoff=c.backoff.current,
                    started_at=c.started_at,
                    status=c.ctx.status if c.ctx is not None else None,
                )
                for c in self._children.values()
            ),
            total_restarts=self._total_restarts,
            gave_up=self._gave_up,
            running=self._nursery is not None,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until cancelled or ``stop()``; raise ``SupervisorGaveUp`` past intensity."""
        await self._run(task_status, None, 0.0)

    async def run_as_child(self, ctx: ChildContext, *, grace: float = 5.0) -> None:
        """``run()`` as a child of another supervisor: a stop request there becomes ``stop()``."""
        _check_grace(grace)
        await self._run(trio.TASK_STATUS_IGNORED, ctx, grace)

    # ---- the loop ---------------------------------------------------------------------------

    async def _run(
        self, task_status: trio.TaskStatus[None], stop_on: ChildContext | None, grace: float
    ) -> None:
        if self._running:
            raise RuntimeError(f"supervisor {self._name!r} is already running")
        self._running = True
        self._intensity = RestartIntensity.from_policy(self._policy)
        self._crashes.clear()
        self._gave_up = False
        for child in self._children.values():
            child.state = ChildState.STARTING
            child.backoff.reset()
            if self._per_child:
                child.intensity = RestartIntensity.from_policy(self._policy)
                child.crashes.clear()
        send, recv = trio.open_memory_channel[_Event](math.inf)
        done = trio.Event()
        outcome: tuple[SupervisorGaveUp, ExceptionGroup[Exception]] | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self._send, self._done = nursery, send, done
                if stop_on is not None:
                    nursery.start_soon(self._stop_when_requested, stop_on, grace)
                for child in list(self._children.values()):
                    if self._children.get(child.child_id) is child and child.group is None:
                        await self._launch(child)
                task_status.started()
                outcome = await self._loop(recv)
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._send = None
            self._running = False
            self._finish()
            send.close()
            recv.close()
            done.set()
        if outcome is not None:
            gave_up, crashes = outcome
            raise gave_up from crashes

    async def _loop(
        self, recv: trio.MemoryReceiveChannel[_Event]
    ) -> tuple[SupervisorGaveUp, ExceptionGroup[Exception]] | None:
        while True:
            if self._stopping and not self._children:
                return None
            if self._to_start:
                child = self._to_start.pop(0)
                if (
                    self._children.get(child.child_id) is child
                    and child.state is ChildState.STARTING
                    and child.group is None
                ):
                    await self._launch(child)
                continue
            group = self._due_group()
            if group is not None:
                await self._fire(group)
                continue
            with trio.move_on_at(self._next_deadline()):
                event = await recv.receive()
                if event is not None:
                    outcome = self._on_exit(event)
                    if outcome is not None:
                        return outcome

    def _due_group(self) -> RestartGroup | None:
        if self._stopping:
            return None
        now = trio.current_time()
        due = [g for g in self._groups if not g.waiting and g.deadline <= now]
        return min(due, key=lambda g: g.deadline) if due else None

    def _next_deadline(self) -> float:
        if self._stopping:
            return math.inf
        return min((g.deadline for g in self._groups if not g.waiting), default=math.inf)

    async def _fire(self, group: RestartGroup) -> None:
        self._groups.remove(group)
        for child in list(group.members):
            if child.group is not group:
                continue  # moved to a newer group or stopped meanwhile
            child.group = None
            if self._children.get(child.child_id) is child:
                await self._launch(child)

    async def _launch(self, child: Child) -> None:
        assert self._nursery is not None and self._send is not None
        now = trio.current_time()
        if child.launched:
            child.restarts += 1
        child.launched = True
        child.generation += 1
        ctx = ChildContext(child.child_id, child.restarts)
        scope = trio.CancelScope()
        child.ctx, child.scope = ctx, scope
        child.state = ChildState.RUNNING
        child.started_at = now
        child.backoff.on_start(now)
        await self._nursery.start(self._child_task, child, child.generation, ctx, scope, self._send)

    @staticmethod
    async def _child_task(
        child: Child,
        generation: int,
        ctx: ChildContext,
        scope: trio.CancelScope,
        send: trio.MemorySendChannel[_Event],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()  # the child's code runs up to its first checkpoint before the next
        error: Exception | None = None
        try:
            with scope:
                await child.fn(ctx)
        except Exception as exc:  # a crash; Cancelled from outside propagates untouched
            error = exc
        send.send_nowait(Exited(child, generation, error))

    def _on_exit(self, event: Exited) -> tuple[SupervisorGaveUp, ExceptionGroup[Exception]] | None:
        child = event.child
        if child.generation != event.generation or self._children.get(child.child_id) is not child:
            return None  # stale
        child.scope = None
        child.ctx = None
        if event.error is not None:
            child.last_error = describe_error(event.error)
        if child.removing:
            self._remove(child, ChildState.STOPPED)
            return None
        if child.state is ChildState.STOPPING:  # cancelled by us to restart with its group
            child.state = ChildState.BACKOFF
            if child.group is not None:
                child.group.waiting.discard(child)
            return None
        crashed = event.error is not None
        if (
            self._stopping
            or child.restart is Restart.TEMPORARY
            or (child.restart is Restart.TRANSIENT and not crashed)
        ):
            self._remove(child, ChildState.FAILED if crashed else ChildState.STOPPED)
            return None
        error = event.error or RuntimeError(f"permanent child {child.child_id!r} returned")
        now = trio.current_time()
        # One window per child (per_child_intensity) or one for the whole supervisor.
        intensity = child.intensity if child.intensity is not None else self._intensity
        window = child.crashes if child.intensity is not None else self._crashes
        while window and now - window[0][0] >= self._policy.within:
            window.popleft()
        window.append((now, error))
        if not intensity.record_restart(now):
            return self._give_up(child, window)
        self._total_restarts += 1
        delay = child.backoff.next_delay(now, self._rng)
        self._schedule_restart(child, now + delay)
        return None

    def _give_up(
        self, child: Child, window: deque[tuple[float, Exception]]
    ) -> tuple[SupervisorGaveUp, ExceptionGroup[Exception]]:
        """``child`` exceeded the intensity (its own, or the shared one): escalate with the
        crashes of the window."""
        child.state = ChildState.FAILED
        self._gave_up = True
        name = self._name if child.intensity is None else f"{self._name}/{child.child_id}"
        crashes = ExceptionGroup(
            f"crashes under supervisor {name!r} within {self._policy.within:g}s",
            [e for _, e in window],
        )
        return SupervisorGaveUp(name, self._policy.max_restarts, self._policy.within), crashes

    def _restart_set(self, crashed: Child) -> list[Child]:
        order = list(self._children.values())
        if self._strategy is Strategy.ONE_FOR_ONE:
            return [crashed]
        if self._strategy is Strategy.ONE_FOR_ALL:
            return order
        return order[order.index(crashed) :]

    def _schedule_restart(self, crashed: Child, deadline: float) -> None:
        group = RestartGroup(deadline)
        for child in self._restart_set(crashed):
            if child is not crashed and child.restart is Restart.TEMPORARY:
                self._request_stop(child, 0.0)  # siblings that are temporary are not restarted
                continue
            if child.removing:
                continue
            old = child.group
            if old is not None:
                group.deadline = max(group.deadline, old.deadline)
                self._detach(child)
            child.group = group
            group.members.append(child)
            if child.scope is not None:  # alive: cancel it, the group waits for its end
                group.waiting.add(child)
                child.state = ChildState.STOPPING
                child.scope.cancel()
            else:
                child.state = ChildState.BACKOFF
        self._groups.append(group)

    def _detach(self, child: Child) -> None:
        group = child.group
        if group is None:
            return
        child.group = None
        group.members.remove(child)
        group.waiting.discard(child)
        if not group.members and group in self._groups:
            self._groups.remove(group)

    def _request_stop(self, child: Child, grace: float) -> None:
        self._detach(child)
        if child.scope is None:  # not running: nothing to wait for
            self._remove(child, ChildState.STOPPED)
            return
        if not child.removing:
            child.removing = True
            child.state = ChildState.STOPPING
            if child.ctx is not None:
                child.ctx._request_stop()
        child.scope.deadline = min(child.scope.deadline, trio.current_time() + grace)

    def _remove(self, child: Child, state: ChildState) -> None:
        if self._children.get(child.child_id) is child:
            del self._children[child.child_id]
        child.state = state
        child.scope = None
        child.ctx = None
        child.stopped.set()
        self._wake()

    def _wake(self) -> None:
        if self._send is not None:
            self._send.send_nowait(None)

    def _finish(self) -> None:
        """After ``run()``: nothing runs any more; children stay registered for a new run."""
        for child in list(self._children.values()):
            child.scope = None
            child.ctx = None
            child.group = None
            if child.removing:
                self._remove(child, ChildState.STOPPED)
            elif child.state is not ChildState.FAILED:
                child.state = ChildState.STOPPED
        self._groups.clear()
        self._to_start.clear()
        self._stopping = False

    async def _stop_all(self, grace: float) -> None:
        for child in reversed(list(self._children.values())):
            if self._children.get(child.child_id) is child:
                self._request_stop(child, grace)
                await child.stopped.wait()
        self._wake()

    async def _stop_when_requested(self, ctx: ChildContext, grace: float) -> None:
        await ctx.wait_stop_requested()
        await self.stop(grace=grace)
