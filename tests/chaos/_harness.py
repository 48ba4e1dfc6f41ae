"""What the chaos tests that run an app of this folder share.

App side (imported by ``*_app.py`` inside each ``actorstream worker`` process): ``app_system()``,
the app's ``System`` with the short leases every chaos run wants, and ``env_int``/``env_float``
for the settings a test passes through the environment.

Test side: ``WorkerRun``, the worker processes of one app against one server, a client to read
back what they wrote and a ``System`` to send with; ``running()`` opens one and, however the test
ends, stops every worker it started (printing their output when the test failed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from actorstream import LeaseTiming, System
from actorstream._transport import Client
from actorstream.testing import RedisServer, WorkerProcess

HERE = Path(__file__).parent

#: Leases of a few seconds: a killed or paused worker's partitions move within a test's patience.
CHAOS_LEASES = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0,
    self_fence_margin=0.5,
)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def app_system(default_name: str) -> System:
    """The ``System`` of a chaos app, named by ``APP_NAME`` (each test runs its own app name):
    short leases, ten seconds to drain on SIGTERM, status published five times a second."""
    return System(
        os.environ.get("APP_NAME", default_name),
        lease_timing=CHAOS_LEASES,
        shutdown_grace=10.0,
        telemetry_interval=0.2,
    )


class WorkerRun:
    """Worker processes of the app ``target`` (``module:system``, a module of this folder)
    against ``server``. ``env`` is every worker's environment (``APP_NAME`` and ``PARTITIONS``
    set from ``app`` and ``partitions``); ``start_worker`` adds to it per worker."""

    def __init__(
        self, server: RedisServer, client: Client, app: str, *, target: str, partitions: int,
        **env: str,
    ) -> None:
        self.server = server
        self.client = client
        self.app = app
        self.target = target
        self.partitions = partitions
        self.base_env = {"APP_NAME": app, "PARTITIONS": str(partitions), **env}
        self.workers: list[WorkerProcess] = []
        self.system = System(app, server.url)

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base_env, **extra}

    def start_worker(self, *flags: str, **env: str) -> WorkerProcess:
        """Start ``actorstream [flags] worker <target>``; ``env`` is added to ``base_env``."""
        worker = WorkerProcess(
            "-m", "actorstream", *flags, "worker", self.target,
            redis_url=self.server.url, env=self.env(**env), pythonpath=[HERE],
            name=f"{self.app}-w{len(self.workers)}",
        )
        self.workers.append(worker.start())
        return worker

    async def partitions_in_order(self, stream: Any) -> list[list[Any]]:
        """Every record of ``stream``, per partition in stream order (read back from Redis)."""
        out = []
        for p in range(stream.partitions):
            entries = await self.client.execute("XRANGE", stream.stream_key(p), "-", "+")
            out.append([stream.format_decoder(flat) for _id, flat in entries])
        return out

    async def read(self, stream: Any) -> list[Any]:
        return [e for part in await self.partitions_in_order(stream) for e in part]

    async def stop_all(self, expect: int | None = None) -> None:
        """SIGTERM every running worker (a paused one is continued) and wait up to 30 s each for
        it to exit; with ``expect``, assert each exit code."""
        for w in self.workers:
            if w.running:
                w.terminate()
        for w in self.workers:
            with trio.fail_after(30):
                code = await w.wait_exited()
            if expect is not None:
                assert code == expect, f"{w!r} exited {code}:\n{w.output()[-3000:]}"


R = TypeVar("R", bound=WorkerRun)


@asynccontextmanager
async def running(make: type[R], server: RedisServer, app: str, **env: str) -> AsyncIterator[R]:
    """``make(server, client, app, **env)`` with a client of its own; every worker it started is
    killed at the end, its output printed to stderr if the test failed."""
    ok = False
    async with Client.from_url(server.url) as client:
        run = make(server, client, app, **env)
        try:
            yield run
            ok = True
        finally:
            for w in run.workers:
                w.close()
                if not ok:
                    print(f"--- output of {w!r}:\n{w.output()[-5000:]}", file=sys.stderr)
                w.cleanup()
