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
from _harness import app_system, env_float, env_int  # the set-up every chaos app shares

from actorstream import Record

system = app_system("perkey")
APP = system.name
PARTITIONS = env_int("PARTITIONS", 16)
SLEEP = env_float("HANDLE_SLEEP", 0.005)
PID = os.getpid()


class Event(Record):
    key: int
    seq: int
    poison: bool = False


events = system.stream("orders", record=Event, partitions=PARTITIONS, key="key")


@system.actor(events, ordering="key", concurrency=env_int("CONCURRENCY", 256))
async def handle(event: Event) -> None:
    start = time.time()
    await trio.sleep(SLEEP)
    if event.poison:
        raise ValueError(f"event {event.seq} of key {event.key} is poison")
    record = f"{event.key}:{event.seq}:{int(start * 1e6)}:{int(time.time() * 1e6)}:{PID}"
    await system.client().execute("RPUSH", f"{APP}:handled", record)
