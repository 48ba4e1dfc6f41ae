"""Telemetry: each worker publishes a compact status to Redis for `actorstream top`.

One pipeline per ``telemetry_interval`` (default 1 s), whatever the event rate:
``SET as:{app:telemetry}:status:<worker> <json> PX 5*interval`` plus new notable events pushed
onto the capped list ``as:{app:telemetry}:events``. No secrets are ever included (the URL is not
published).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio
from attrs import frozen

from .._core import keys as _keys
from .._core.assignment import Slot
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.policy import RestartPolicy
from .._core.status import (
    CoordinatorStatus,
    LayoutEntry,
    PartitionStatus,
    StatusDocument,
    WorkerEvent,
)
from .._version import __version__
from .context import WorkerContext
from .coordinator import CoordinatorStatistics
from .counters import PartitionStatistics
from .supervisor import ChildContext, Restart, Strategy, Supervisor, SupervisorStatistics

log = logging.getLogger("actorstream.telemetry")
EVENTS_KEPT = 200


@frozen
class WorkerStatistics:
    worker_id: str
    host: str
    pid: int
    uptime: float
    coordinator: CoordinatorStatistics
    partitions: tuple[PartitionStatistics, ...]
    supervisor: SupervisorStatistics
    dead_lettered: int


@frozen
class TelemetryContext:
    """The worker, how to take its statistics and its unpublished notable events, the layout."""

    worker: WorkerContext
    statistics: Callable[[], WorkerStatistics]
    take_unpublished: Callable[[], list[tuple[float, str, str]]]
    layout: tuple[LayoutEntry, ...]


def status_document(context: TelemetryContext) -> StatusDocument:
    """The worker's statistics in the published schema (``_core.status``).

    Monotonic (trio) times become wall-clock seconds here: other processes cannot interpret
    this worker's monotonic clock. ``layout`` lets ``top APP`` show every partition without
    importing the app.
    """
    stats = context.statistics()
    now_wall = time.time()
    last = stats.coordinator.last_rebalance_at
    restart_backoff = {
        (c.child_id.actor, c.child_id.partition): c.current_backoff
        for c in stats.supervisor.children
        if isinstance(c.child_id, Slot)
    }
    return StatusDocument(
        worker_id=stats.worker_id,
        host=stats.host,
        pid=stats.pid,
        app=context.worker.app,
        version=__version__,
        uptime=stats.uptime,
        published_at=now_wall,
        partitions=tuple(
            _partition_status(p, restart_backoff.get((p.actor, p.partition), 0.0))
            for p in stats.partitions
        ),
        coordinator=CoordinatorStatus(
            owned=stats.coordinator.owned,
            rebalances=stats.coordinator.rebalances,
            last_rebalance_wall=(
                None if last is None else now_wall - (trio.current_time() - last)
            ),
            last_error=stats.coordinator.last_error,
        ),
        restarts=stats.supervisor.total_restarts,
        dead_lettered=stats.dead_lettered,
        layout=context.layout,
    )


def _partition_status(p: PartitionStatistics, restart_backoff: float) -> PartitionStatus:
    """What the schema shares with the statistics is copied by name; two fields are converted:
    ``backoff`` (the longer of the partition's own backing-off wait and its supervisor's
    restart backoff) and ``table_keys`` (summed over the partition's tables)."""
    shared = {
        f.name: getattr(p, f.name)
        for f in attrs.fields(PartitionStatus)
        if f.name not in _CONVERTED and hasattr(p, f.name)
    }
    return PartitionStatus(
        **shared,
        backoff=max(p.backoff or 0.0, restart_backoff),
        table_keys=None if p.table_keys is None else sum(p.table_keys.values()),
    )


_CONVERTED = frozenset({"backoff", "table_keys"})


async def publish_once(context: TelemetryContext) -> None:
    worker = context.worker
    interval = worker.settings.telemetry_interval
    doc = _json(status_document(context).to_json())
    commands: list[Any] = [
        ("SET", _keys.status_key(worker.app, worker.worker_id), doc, "PX",
         int(interval * 5000)),
    ]
    events = context.take_unpublished()
    if events:
        key = _keys.events_key(worker.app)
        payloads = [_json(WorkerEvent(t, k, m, worker.worker_id).to_json()) for t, k, m in events]
        commands.append(("LPUSH", key, *payloads))
        commands.append(("LTRIM", key, 0, EVENTS_KEPT - 1))
    await worker.client.pipeline(commands)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


async def publish_forever(context: TelemetryContext) -> None:
    interval = context.worker.settings.telemetry_interval
    while True:
        try:
            await publish_once(context)
        except TRANSIENT_REDIS_ERRORS as exc:
            log.debug("telemetry not published: %s", exc)
        await trio.sleep(interval)


async def run_telemetry(context: TelemetryContext) -> None:
    """The telemetry branch: the publisher under a supervisor of its own (a bug restarts it)."""
    sup = Supervisor(
        "telemetry",
        strategy=Strategy.ONE_FOR_ONE,
        policy=RestartPolicy(max_restarts=5, within=60.0),
    )

    async def publisher(ctx: ChildContext) -> None:
        await publish_forever(context)

    sup.start_child("publisher", publisher, restart=Restart.PERMANENT)
    await sup.run()
