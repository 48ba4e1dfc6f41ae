"""The partitions branch: one partition actor per owned (actor, partition), started and stopped
as the coordinator acquires and releases leases.

Failure containment starts here: the supervisor runs with ``per_child_intensity=True``, so each
partition actor has its own restart intensity (MaxR in MaxT of ``Settings.restart_policy``) and
its own backoff; a crash-looping partition cannot use up its siblings' restarts. What happens
when one partition exceeds its own intensity is decided in ``Supervisor._on_exit`` (today: the
supervisor gives up, naming the partition, and the worker ends; issue 11 makes it back off).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

import trio
from attrs import frozen

from .._actors import ActorSpec
from .._core.assignment import Slot
from .._core.fence import Fence
from .._middleware import Middleware
from .context import WorkerContext
from .counters import Counters, PartitionStatistics, snapshot
from .deadletters import DeadLetters
from .partition import PartitionActor, PartitionContext
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

    def running(self, slot: Slot) -> bool:
        return slot in self.supervisor.children()

    def start(self, slot: Slot, fence: Fence) -> None:
        context = self.context
        counters = self.counters.get(slot)
        if counters is None:
            # Time every handler call only when /metrics is served (the histogram).
            timed = context.worker.settings.metrics_port is not None
            counters = self.counters[slot] = Counters(timed=timed)
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

        async def child(ctx: ChildContext) -> None:
            await PartitionActor(actor_context).run(ctx)

        if self.running(slot):
            # The coordinator only acquires slots with no running actor; say so if that breaks.
            log.warning("partition actor %s[%d] is still running; not started twice",
                        slot.actor, slot.partition)
            return
        self.supervisor.start_child(slot, child, restart=Restart.TRANSIENT)

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
