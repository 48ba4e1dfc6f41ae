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
from _harness import app_system, env_float, env_int  # the set-up every chaos app shares

from actorstream import Record

system = app_system("exactly")
PARTITIONS = env_int("PARTITIONS", 8)
SLEEP = env_float("HANDLE_SLEEP", 0)


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


settings: dict[str, object] = {"batch_size": env_int("BATCH_SIZE", 50)}
if os.environ.get("ORDERING"):  # "key": many events in flight, one per key
    settings["ordering"] = os.environ["ORDERING"]
    settings["concurrency"] = env_int("CONCURRENCY", 64)
if os.environ.get("WAIT_REPLICAS"):
    settings["wait_replicas"] = env_int("WAIT_REPLICAS", 0)
    settings["wait_timeout"] = env_float("WAIT_TIMEOUT", 0.2)


@system.actor(
    inputs, tables=[counts], processing=os.environ.get("PROCESSING", "exactly_once"),
    **settings,  # type: ignore[arg-type]
)
async def count(event: In) -> None:
    if SLEEP:
        await trio.sleep(SLEEP)
    counts[event.key] += 1
    await outputs.send(Out(event.key, event.seq, counts[event.key]))
