"""The worker's ops endpoints: ``/metrics``, ``/healthz``, ``/readyz`` on one port.

``/healthz``: 200 whenever the trio loop answers (the response is produced by a task of the
worker's own loop). ``/readyz``: 200 only while the worker has joined the membership, is not
draining and Redis answers a PING within a second; 503 with the reason otherwise, so a
Kubernetes readiness probe takes a starting, draining or cut-off worker out of rotation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from .._ops.http import Response, Route, serve_http
from .view import Backlog, idle_sample, read_backlog, worker_sample

if TYPE_CHECKING:
    from .._tree.root import Worker

#: Where the endpoints find the worker: None before it runs and after it stopped.
WorkerSource = Callable[[], "Worker | None"]

log = logging.getLogger("actorstream.ops")

PING_TIMEOUT = 1.0
METRICS_HINT = (
    "prometheus_client is not installed: pip install 'actorstream[metrics]' to serve /metrics"
)


async def readiness(worker: Worker | None) -> tuple[bool, str]:
    """(ready, reason) of a worker."""
    if worker is None:
        return False, "not running"
    if worker.stopping:
        return False, "draining"
    if worker.worker_id not in worker.ownership.members:
        return False, "not joined"
    try:
        with trio.fail_after(PING_TIMEOUT):
            await worker.client.execute("PING")
    except (Exception, trio.TooSlowError) as exc:
        return False, f"redis unreachable: {type(exc).__name__}"
    return True, "ready"


def worker_routes(app: str, source: WorkerSource, streams: Sequence[str] = ()) -> dict[str, Route]:
    try:
        from . import metrics
    except ImportError:
        metrics = None  # type: ignore[assignment]
        log.warning("%s; /healthz and /readyz are served", METRICS_HINT)

    async def healthz() -> Response:
        return Response.text(200, "ok")

    async def readyz() -> Response:
        ready, reason = await readiness(source())
        return Response.text(200 if ready else 503, reason)

    async def metrics_route() -> Response:
        if metrics is None:
            return Response.text(501, METRICS_HINT)
        worker = source()
        if worker is None:
            view = idle_sample(app, streams)
        else:
            backlog: dict[tuple[str, int], Backlog] = {}
            try:
                with trio.fail_after(PING_TIMEOUT * 2):
                    backlog = await read_backlog(worker)
            except (Exception, trio.TooSlowError) as exc:
                # Redis is down: serve the counters anyway; lag/pending are absent.
                log.debug("metrics: lag/pending not read: %s", exc)
            view = worker_sample(worker, backlog)
        return Response(200, metrics.exposition(view), content_type=metrics.CONTENT_TYPE)

    return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_route}


async def serve_ops(
    app: str,
    source: WorkerSource,
    port: int,
    host: str = "0.0.0.0",
    *,
    streams: Sequence[str] = (),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ops endpoints of a worker until cancelled; ``started()`` gives the port.

    ``System.start`` runs this when ``metrics_port`` is set (the System setting, or
    ``actorstream worker --metrics-port``) before anything else, so the probes answer while it
    waits for Redis ("not running") and before the coordinator's first step ("not joined").
    """
    await serve_http(worker_routes(app, source, streams), port, host, task_status=task_status)
