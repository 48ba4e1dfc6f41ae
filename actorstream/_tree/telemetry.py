"""Telemetry: each worker publishes a compact status to Redis for `actorstream top`.

One pipeline per ``telemetry_interval`` (default 1 s), whatever the event rate:
``SET as:{app:telemetry}:status:<worker> <json> PX 5*interval`` plus new notable events pushed
onto the capped list ``as:{app:telemetry}:events``. No secrets are ever included (the URL is not
published).
"""

from __future__ import annotations

import enum
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
class LayoutEntry:
    """One declared actor as `top` needs it to show every partition without the app."""

    actor: str
    stream: str
    partitions: int


@frozen
class TelemetryContext:
    """The worker, how to take its statistics and its unpublished notable events, the layout."""

    worker: WorkerContext
    statistics: Callable[[], WorkerStatistics]
    take_unpublished: Callable[[], list[tuple[float, str, str]]]
    layout: tuple[LayoutEntry, ...]



def status_document(context: TelemetryContext) -> dict[str, Any]:
    """The worker's statistics as JSON-able data, plus what `top` needs to read it alone.

    Monotonic (trio) times are converted to wall-clock seconds here: other processes cannot
    interpret this worker's monotonic clock. ``layout`` lets ``top APP`` show every partition
    without importing the app.
    """
    stats = context.statistics()
    now_wall = time.time()
    now_mono = trio.current_time()
    doc = attrs.asdict(stats, recurse=True, value_serializer=_serialize)
    children = stats.supervisor.children
    backoff = {
        f"{c.child_id.actor}[{c.child_id.partition}]": c.current_backoff
        for c in children
        if isinstance(c.child_id, Slot) and c.current_backoff > 0
    }
    doc["supervisor"] = {
        "restarts": stats.supervisor.total_restarts,
        "gave_up": stats.supervisor.gave_up,
    }
    for part in doc["partitions"]:
        part["backoff"] = backoff.get(f"{part['actor']}[{part['partition']}]", 0.0)
    coord = doc["coordinator"]
    last = stats.coordinator.last_rebalance_at
    coord["last_rebalance_wall"] = None if last is None else now_wall - (now_mono - last)
    doc["layout"] = [
        {"actor": e.actor, "stream": e.stream, "partitions": e.partitions}
        for e in context.layout
    ]
    doc["published_at"] = now_wall
    doc["app"] = context.worker.app
    doc["version"] = __version__
    return doc


def _serialize(instance: object, attribute: object, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Slot):
        return f"{value.actor}[{value.partition}]"
    return value


async def publish_once(context: TelemetryContext) -> None:
    worker = context.worker
    interval = worker.settings.telemetry_interval
    doc = json.dumps(status_document(context), default=str, separators=(",", ":"))
    commands: list[Any] = [
        ("SET", _keys.status_key(worker.app, worker.worker_id), doc, "PX",
         int(interval * 5000)),
    ]
    events = context.take_unpublished()
    if events:
        key = _keys.events_key(worker.app)
        payloads = [
            json.dumps({"t": t, "kind": k, "msg": m, "worker": worker.worker_id})
            for t, k, m in events
        ]
        commands.append(("LPUSH", key, *payloads))
        commands.append(("LTRIM", key, 0, EVENTS_KEPT - 1))
    await worker.client.pipeline(commands)


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
