"""Telemetry: each worker publishes a compact status to Redis for `actorstream top`.

One pipeline per ``telemetry_interval`` (default 1 s), whatever the event rate:
``SET as:{app}:status:<worker> <json> PX 5*interval`` plus new notable events pushed onto the
capped list ``as:{app}:events``. No secrets are ever included (the URL is not published).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from . import _keys
from ._partition import TRANSIENT_REDIS_ERRORS

if TYPE_CHECKING:
    from ._system import Runtime

log = logging.getLogger("actorstream.telemetry")
EVENTS_KEPT = 200


def status_document(runtime: Runtime) -> dict[str, Any]:
    stats = runtime.statistics()
    doc = attrs.asdict(stats, recurse=True)
    doc["supervisor"] = {
        "restarts": sum(c["restarts"] for c in doc["supervisor"].get("children", [])),
    }
    doc["published_at"] = time.time()
    doc["app"] = runtime.app
    return doc


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
