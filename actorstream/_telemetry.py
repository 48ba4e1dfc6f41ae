"""Telemetry: each worker publishes a compact status to Redis for `actorstream top`.

One pipeline per ``telemetry_interval`` (default 1 s), whatever the event rate:
``SET as:{app}:status:<worker> <json> PX 5*interval`` plus new notable events pushed onto the
capped list ``as:{app}:events``. No secrets are ever included (the URL is not published).
"""

from __future__ import annotations

import enum
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._core import keys as _keys
from ._core.assignment import Slot
from ._core.classify import TRANSIENT_REDIS_ERRORS
from ._version import __version__

if TYPE_CHECKING:
    from ._system import Runtime

log = logging.getLogger("actorstream.telemetry")
EVENTS_KEPT = 200


def status_document(runtime: Runtime) -> dict[str, Any]:
    """The worker's statistics as JSON-able data, plus what `top` needs to read it alone.

    Monotonic (trio) times are converted to wall-clock seconds here: other processes cannot
    interpret this worker's monotonic clock. ``layout`` lets ``top APP`` show every partition
    without importing the app.
    """
    stats = runtime.statistics()
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
        {"actor": spec.name, "stream": spec.stream.name, "partitions": spec.stream.partitions}
        for spec in runtime.system.actors.values()
    ]
    doc["published_at"] = now_wall
    doc["app"] = runtime.app
    doc["version"] = __version__
    return doc


def _serialize(instance: object, attribute: object, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Slot):
        return f"{value.actor}[{value.partition}]"
    return value


async def publish_once(runtime: Runtime) -> None:
    interval = runtime.settings.telemetry_interval
    doc = json.dumps(status_document(runtime), default=str, separators=(",", ":"))
    commands: list[Any] = [
        ("SET", _keys.status_key(runtime.app, runtime.worker_id), doc, "PX",
         int(interval * 5000)),
    ]
    events = runtime.take_unpublished()
    if events:
        key = _keys.events_key(runtime.app)
        payloads = [
            json.dumps({"t": t, "kind": k, "msg": m, "worker": runtime.worker_id})
            for t, k, m in events
        ]
        commands.append(("LPUSH", key, *payloads))
        commands.append(("LTRIM", key, 0, EVENTS_KEPT - 1))
    await runtime.client.pipeline(commands)


async def publish_forever(runtime: Runtime) -> None:
    interval = runtime.settings.telemetry_interval
    while True:
        try:
            await publish_once(runtime)
        except TRANSIENT_REDIS_ERRORS as exc:
            log.debug("telemetry not published: %s", exc)
        await trio.sleep(interval)
