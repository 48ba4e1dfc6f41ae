"""The worker app of the per-key chaos tests, run with ``actorstream worker``.

Environment: ``APP_NAME``; ``PARTITIONS`` (16); ``HANDLE_SLEEP`` (0.005 s, an I/O-bound handler);
``CONCURRENCY`` (256). Events with ``poison=True`` raise ``ValueError``. Each completed handling
RPUSHes ``key:seq:start_us:end_us:pid`` to ``<app>:handled`` (wall-clock microseconds: workers
on one host share that clock), the ground truth the checker compares with what was sent.
"""

from __future__ import annotations

import os
import time

import trio

from actorstream import LeaseTiming, Record, System

APP = os.environ.get("APP_NAME", "perkey")
PARTITIONS = int(os.environ.get("PARTITIONS", "16"))
SLEEP = float(os.environ.get("HANDLE_SLEEP", "0.005"))
PID = os.getpid()

system = System(
    APP,
    lease_timing=LeaseTiming(
        ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0,
        self_fence_margin=0.5,
    ),
    shutdown_grace=10.0,
    telemetry_interval=0.2,
)


class Event(Record):
    key: int
    seq: int
    poison: bool = False


events = system.stream("orders", record=Event, partitions=PARTITIONS, key="key")


@system.actor(events, ordering="key", concurrency=int(os.environ.get("CONCURRENCY", "256")))
async def handle(event: Event) -> None:
    start = time.time()
    await trio.sleep(SLEEP)
    if event.poison:
        raise ValueError(f"event {event.seq} of key {event.key} is poison")
    record = f"{event.key}:{event.seq}:{int(start * 1e6)}:{int(time.time() * 1e6)}:{PID}"
    await system.client().execute("RPUSH", f"{APP}:handled", record)
