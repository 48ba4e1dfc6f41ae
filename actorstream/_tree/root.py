"""The root of a worker's supervision tree: what ``System.start`` runs.

::

    Worker.run (root: intensity 0, one for all: a branch that escalates ends the worker)
    ├── dead letters  Supervisor(5 in 60 s): the dead-letter actor (moves poison events, fenced;
    │                 dead-letter retention)
    ├── partitions    Supervisor, one partition actor per owned slot, each with its own intensity
    ├── coordinator   Supervisor(5 in 60 s): membership, fenced leases, rebalance
    ├── scheduler     Supervisor: leader lease, retention, tasks, timers, cron
    └── telemetry     Supervisor(5 in 60 s): status for `actorstream top`, once a second

Every branch has its own supervisor with restarts; only their escalations (``SupervisorGaveUp``)
reach the root, which is a nursery: one failure cancels the siblings and propagates, as in
Erlang's ``one_for_all`` with intensity 0. The branches get frozen contexts built here
(``WorkerContext`` plus what each needs), never the System.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import trio
from attrs import frozen

from .._actors import ActorSpec
from .._core.assignment import Slot
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.errors import SupervisorGaveUp
from .._core.policy import RestartPolicy
from .._core.settings import Settings
from .._core.status import LayoutEntry
from .._middleware import Middleware
from .._ops import logs as _logs
from .._streams import Stream
from .._transport import Client
from .context import RedisHealth, WorkerContext
from .coordinator import Coordinator, CoordinatorContext, OwnershipState
from .deadletters import DeadLetters
from .partitions import PartitionsContext, PartitionsSupervisor
from .scheduler import Leadership, SchedulerContext, TaskSpec, run_scheduler
from .supervisor import ChildContext, Restart, Strategy, Supervisor
from .telemetry import (
    TelemetryContext,
    WorkerStatistics,
    publish_once,
    run_telemetry,
)

__all__ = ["Worker", "WorkerPlan"]

log = logging.getLogger("actorstream")


@frozen
class WorkerPlan:
    """What the System hands the root: its declarations as values and a client factory."""

    app: str
    settings: Settings
    actors: Mapping[str, ActorSpec]
    streams: tuple[Stream[Any], ...]
    tasks: tuple[TaskSpec, ...]
    middleware: tuple[Middleware, ...]
    new_client: Callable[[str], Client]


class Worker:
    """One running worker: the handle ``running(system)`` yields and ``nursery.start`` gives."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.app = plan.app
        self.settings = plan.settings
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:8]}"
        self.started_at = trio.current_time()
        self.client = plan.new_client("worker")
        self.events: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=200)
        self._unpublished: list[tuple[float, str, str]] = []
        self._stopping = trio.Event()
        self.forced = False  # a second signal cut the drain short
        self.gave_up: BaseException | None = None
        self.context = WorkerContext(
            app=plan.app,
            worker_id=self.worker_id,
            host=self.host,
            pid=self.pid,
            started_wall_ms=int(time.time() * 1000),
            client=self.client,
            settings=plan.settings,
            report=self.report,
            stopping=self._stopping,
            redis=RedisHealth(plan.settings.lease_timing.ttl, self.client),
        )
        self.ownership = OwnershipState()
        consumed = {spec.stream.name: spec.stream.partitions for spec in plan.actors.values()}
        self.dead_letters = DeadLetters(self.context, sorted(consumed.items()))
        self.partitions = PartitionsSupervisor(
            PartitionsContext(
                worker=self.context, actors=plan.actors, middleware=plan.middleware,
                dead_letters=self.dead_letters, on_fenced=self._on_fenced,
            )
        )
        slots = tuple(
            sorted(
                Slot(spec.name, p)
                for spec in plan.actors.values()
                for p in range(spec.stream.partitions)
            )
        )
        self.coordinator = Coordinator(
            CoordinatorContext(
                worker=self.context,
                slots=slots,
                stream_of={name: spec.stream.name for name, spec in plan.actors.items()},
                ownership=self.ownership,
                partitions=self.partitions,
            )
        )
        self.leadership = Leadership(self.context)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _on_fenced(self, slot: Slot) -> None:
        self.coordinator.on_fenced(slot)

    def report(self, kind: str, message: str) -> None:
        """Record a notable event (crash, restart, rebalance, fence, dead letter) for `top`."""
        item = (time.time(), kind, message)
        self.events.append(item)
        self._unpublished.append(item)
        if len(self._unpublished) > 200:
            del self._unpublished[:-200]

    def take_unpublished(self) -> list[tuple[float, str, str]]:
        items, self._unpublished = self._unpublished, []
        return items

    async def wait_stopping(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        """Begin a graceful stop: drain partitions, release leases, leave, return."""
        self._stopping.set()

    async def run(
        self, *, task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        plan = self.plan
        telemetry = TelemetryContext(
            worker=self.context,
            statistics=self.statistics,
            take_unpublished=self.take_unpublished,
            layout=tuple(
                LayoutEntry(spec.name, spec.stream.name, spec.stream.partitions)
                for spec in plan.actors.values()
            ),
        )
        scheduler = SchedulerContext(
            worker=self.context,
            tasks=plan.tasks,
            streams=plan.streams,
            leadership=self.leadership,
        )
        left = trio.Event()
        # Every log line of this worker's tasks carries these (structured logs, --log-format).
        _logs.bind(worker=self.worker_id, app=self.app)
        try:
            async with trio.open_nursery() as nursery:
                if self.settings.install_signal_handlers:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                await nursery.start(self.dead_letters.run_branch)
                await nursery.start(self.partitions.run)
                await nursery.start(self._run_coordinator, left)
                nursery.start_soon(run_telemetry, telemetry)
                nursery.start_soon(run_scheduler, scheduler)
                task_status.started(self)
                await self.wait_stopping()
                # The coordinator drains and leaves; then everything else is cancelled.
                await left.wait()
                await self._publish_last(telemetry)
                nursery.cancel_scope.cancel()
        except* SupervisorGaveUp as group:
            self.gave_up = group.exceptions[0]
            raise

    async def _publish_last(self, telemetry: TelemetryContext) -> None:
        """Publish the stop's events ("released", "left") before telemetry is cancelled."""
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            try:
                await publish_once(telemetry)
            except TRANSIENT_REDIS_ERRORS as exc:
                log.debug("last telemetry not published: %s", exc)

    async def _run_coordinator(
        self, left: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The coordinator under a small supervisor of its own: a bug there restarts it."""
        policy = RestartPolicy(max_restarts=5, within=60.0)
        sup = Supervisor("coordinator", strategy=Strategy.ONE_FOR_ONE, policy=policy)
        first = trio.Event()

        async def child(ctx: ChildContext) -> None:
            async with trio.open_nursery() as n:
                await n.start(self.coordinator.run)
                first.set()
            # run() returned: the graceful leave is complete.
            left.set()

        sup.start_child("coordinator", child, restart=Restart.TRANSIENT)
        async with trio.open_nursery() as n:
            n.start_soon(sup.run)
            await first.wait()
            task_status.started()
            await left.wait()
            n.cancel_scope.cancel()

    async def _watch_signals(self, cancel_scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if not self.stopping:
                    log.warning("received %s: draining (finishing the events in hand, "
                                "releasing leases); press Ctrl-C again to exit at once",
                                signal.Signals(signum).name)
                    self.request_stop()
                else:
                    log.warning("second signal: exiting now")
                    self.forced = True
                    cancel_scope.cancel()
                    return

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.pid,
            uptime=trio.current_time() - self.started_at,
            coordinator=self.coordinator.statistics(),
            partitions=self.partitions.partition_statistics(),
            supervisor=self.partitions.statistics(),
            dead_lettered=self.dead_letters.moved,
        )
