"""The worker app of the exactly-once chaos tests, run with ``actorstream worker``.

A per-key counter with ``processing="exactly_once"``: each input ``(key, seq)`` adds one to
``counts[key]`` and sends one output ``(key, seq, count)``; the count committed with the ack.
Environment: ``APP_NAME``, ``PARTITIONS`` (8), ``BATCH_SIZE`` (50), ``HANDLE_SLEEP`` (seconds
each handling sleeps: a slower handler keeps events in flight when a fault hits),
``PROCESSING`` (``exactly_once``; ``at_least_once`` shows what the checker catches without it),
``ORDERING``/``CONCURRENCY`` (``key``: events of different keys in flight at once),
``WAIT_REPLICAS``/``WAIT_TIMEOUT`` (commits and outbox forwards WAIT for replicas).
"""

from __future__ import annotations

import os

import trio

from actorstream import LeaseTiming, Record, System

APP = os.environ.get("APP_NAME", "exactly")
PARTITIONS = int(os.environ.get("PARTITIONS", "8"))
SLEEP = float(os.environ.get("HANDLE_SLEEP", "0"))

system = System(
    APP,
    lease_timing=LeaseTiming(
        ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0,
        self_fence_margin=0.5,
    ),
    shutdown_grace=10.0,
    telemetry_interval=0.2,
)


class In(Record):
    key: int
    seq: int


class Out(Record):
    key: int
    seq: int
    count: int


inputs = system.stream("inputs", record=In, partitions=PARTITIONS, key="key")
outputs = system.stream("outputs", record=Out, partitions=4, key="key")
counts = system.table("counts", value=int, default=0)


settings: dict[str, object] = {"batch_size": int(os.environ.get("BATCH_SIZE", "50"))}
if os.environ.get("ORDERING"):  # "key": many events in flight, one per key
    settings["ordering"] = os.environ["ORDERING"]
    settings["concurrency"] = int(os.environ.get("CONCURRENCY", "64"))
if os.environ.get("WAIT_REPLICAS"):
    settings["wait_replicas"] = int(os.environ["WAIT_REPLICAS"])
    settings["wait_timeout"] = float(os.environ.get("WAIT_TIMEOUT", "0.2"))


@system.actor(
    inputs, tables=[counts], processing=os.environ.get("PROCESSING", "exactly_once"),
    **settings,  # type: ignore[arg-type]
)
async def count(event: In) -> None:
    if SLEEP:
        await trio.sleep(SLEEP)
    counts[event.key] += 1
    await outputs.send(Out(event.key, event.seq, counts[event.key]))
