"""The partitions branch: one partition actor per owned (actor, partition), started and stopped
as the coordinator acquires and releases leases.

Failure containment: handler failures never reach the supervisor. The partition
actor contains them (``handling``, the rule of ``_core.failures``); the iterator form's handler,
which owns its loop, restarts its actor here, in the child function, under the partition's own
``RestartBudget`` (MaxR in MaxT of ``Settings.restart_policy``, where a handled or dead-lettered
event is progress); past it the partition is ``backing-off`` (waits growing to the actor's
``backoff_max``), and it never gives up. What still reaches the supervisor (which runs with
``per_child_intensity=True``: each partition has its own intensity) are failures of the runtime
itself; past a partition's intensity the supervisor gives up and the worker ends, with one line.

The partitions of one actor on this worker share a ``HealthBoard``: the evidence by which the
rule tells an outage (the others fail too) from a poison event (the others succeed).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

import trio
from attrs import frozen

from .._actors import ActorSpec
from .._core.assignment import Slot
from .._core.crashes import CrashLogLimit
from .._core.failures import HealthBoard, PartitionFailures, RestartBudget
from .._core.fence import Fence
from .._middleware import Middleware
from .context import WorkerContext
from .counters import Counters, PartitionState, PartitionStatistics, snapshot
from .deadletters import DeadLetters
from .partition import HandlerCrashed, PartitionActor, PartitionContext
from .supervisor import ChildContext, Restart, Strategy, Supervisor, SupervisorStatistics

__all__ = ["PartitionsContext", "PartitionsSupervisor"]

log = logging.getLogger("actorstream")


@frozen
class PartitionsContext:
    """The worker, the declared actors by name, system-wide middleware, the dead-letter side,
    and ``on_fenced(slot)`` (the coordinator forgets a lease that Redis refused)."""

    worker: WorkerContext
    actors: Mapping[str, ActorSpec]
    middleware: tuple[Middleware, ...]
    dead_letters: DeadLetters
    on_fenced: Callable[[Slot], None]


class PartitionsSupervisor:
    """Starts and stops partition actors under the partitions supervisor, as leases change."""

    def __init__(self, context: PartitionsContext) -> None:
        self.context = context
        self.supervisor = Supervisor(
            "partitions",
            strategy=Strategy.ONE_FOR_ONE,
            policy=context.worker.settings.restart_policy,
            per_child_intensity=True,
        )
        # Kept across restarts and re-acquisitions of a slot: `top` shows lifetime totals.
        self.counters: dict[Slot, Counters] = {}
        self.boards: dict[str, HealthBoard] = {}  # per actor: the containment rule's evidence
        self.crash_logs: dict[str, CrashLogLimit] = {}  # per actor: its traceback rate limit

    def running(self, slot: Slot) -> bool:
        return slot in self.supervisor.children()

    def start(self, slot: Slot, fence: Fence) -> None:
        context = self.context
        counters = self._counters(slot)
        counters.epoch = fence.epoch
        actor_context = PartitionContext(
            worker=context.worker,
            spec=context.actors[slot.actor],
            partition=slot.partition,
            fence=fence,
            counters=counters,
            dead_letters=context.dead_letters,
            middleware=context.middleware,
            on_fenced=functools.partial(context.on_fenced, slot),
        )

        budget = self._budget(slot)

        async def child(ctx: ChildContext) -> None:
            try:
                while True:
                    progress = (counters.processed, counters.dead_lettered)
                    try:
                        await PartitionActor(actor_context).run(ctx)
                        return
                    except HandlerCrashed:
                        if progress != (counters.processed, counters.dead_lettered):
                            budget.on_progress()
                        if not await _restart_later(ctx, counters, budget):
                            return
            finally:
                counters.failures.board.forget(slot.partition)

        if self.running(slot):
            # The coordinator only acquires slots with no running actor; say so if that breaks.
            log.warning("partition actor %s[%d] is still running; not started twice",
                        slot.actor, slot.partition)
            return
        self.supervisor.start_child(slot, child, restart=Restart.TRANSIENT)

    def _counters(self, slot: Slot) -> Counters:
        counters = self.counters.get(slot)
        if counters is None:
            spec = self.context.actors[slot.actor]
            board = self.boards.setdefault(slot.actor, HealthBoard())
            failures = PartitionFailures(spec.settings.containment(), board, slot.partition)
            # Time every handler call only when /metrics is served (the histogram).
            timed = self.context.worker.settings.metrics_port is not None
            # One rate limit of handler tracebacks per actor: 16 partitions failing alike make
            # one traceback and a count, not 16 tracebacks.
            crash_log = self.crash_logs.setdefault(slot.actor, CrashLogLimit())
            counters = self.counters[slot] = Counters(failures, timed=timed, crash_log=crash_log)
        return counters

    def _budget(self, slot: Slot) -> RestartBudget:
        policy = self.context.worker.settings.restart_policy
        return RestartBudget(
            max_restarts=policy.max_restarts, within=policy.within,
            initial=policy.backoff_initial, restart_max=policy.backoff_max,
            backoff_max=self.context.actors[slot.actor].settings.backoff_max,
            multiplier=policy.backoff_multiplier, jitter=policy.jitter,
        )

    async def stop(self, slot: Slot, *, grace: float) -> None:
        if self.running(slot):
            await self.supervisor.stop_child(slot, grace=grace)

    async def stop_all(self, *, grace: float) -> None:
        async with trio.open_nursery() as n:
            for slot in list(self.supervisor.children()):
                assert isinstance(slot, Slot)
                n.start_soon(functools.partial(self.stop, slot, grace=grace))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.supervisor.run(task_status=task_status)

    def partition_statistics(self) -> tuple[PartitionStatistics, ...]:
        actors = self.context.actors
        return tuple(
            snapshot(actors[slot.actor], slot.partition, c)
            for slot, c in sorted(self.counters.items())
        )

    def statistics(self) -> SupervisorStatistics:
        return self.supervisor.statistics()


async def _restart_later(ctx: ChildContext, counters: Counters, budget: RestartBudget) -> bool:
    """Wait out the budget's delay before a restart (backing-off past the intensity); False
    when a stop was requested meanwhile."""
    decision = budget.on_crash(trio.current_time())
    counters.restarts += 1
    if decision.backing_off:
        counters.state = PartitionState.BACKING_OFF
        counters.backoff = decision.delay
    with trio.move_on_after(decision.delay):
        await ctx.wait_stop_requested()
    return not ctx.stop_requested
