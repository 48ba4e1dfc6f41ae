"""``rebalance_app.py`` plus a handler that hogs the CPU once (scenario 22).

Same environment and handled log as ``rebalance_app.py``; in addition ``HOG_SECONDS``: the first
event handled by any worker of the app (a ``SET NX`` flag in Redis picks it) blocks the whole
process in a synchronous ``time.sleep(HOG_SECONDS)`` *inside the handler*, like a CPU-bound
computation: no checkpoint, so no heartbeat, no renewal and no per-event timeout can run. The
worker's pid and the hogged event go to ``<app>:hog`` ("pid:partition:epoch:seq") before the
sleep; the handled-log entry of that event is pushed after it (a side effect made by a worker
that woke up without its lease).
"""

from __future__ import annotations

import logging
import os
import time

import trio

from actorstream import LeaseTiming, Record, System
from actorstream._assignment import Slot

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

APP = os.environ.get("APP_NAME", "hog")
DELAY = float(os.environ.get("HANDLE_DELAY", "0"))
HOG = float(os.environ.get("HOG_SECONDS", "0"))
PID = os.getpid()

system = System(
    APP,
    lease_timing=LeaseTiming(
        ttl=float(os.environ.get("LEASE_TTL", "3")),
        renew_interval=float(os.environ.get("LEASE_RENEW", "1")),
        heartbeat_interval=float(os.environ.get("HEARTBEAT", "0.5")),
        member_timeout=float(os.environ.get("MEMBER_TIMEOUT", "3")),
        self_fence_margin=float(os.environ.get("FENCE_MARGIN", "0.5")),
    ),
    shutdown_grace=float(os.environ.get("SHUTDOWN_GRACE", "10")),
    telemetry_interval=0.2,
)


class Order(Record):
    key: int
    seq: int


orders = system.stream(
    "orders", record=Order, partitions=int(os.environ.get("PARTITIONS", "8")), key="key"
)


def _epoch(partition: int) -> int:
    runtime = system._runtime
    if runtime is None:
        return -1
    counters = runtime.manager.counters.get(Slot("handle", partition))
    return -1 if counters is None else counters.epoch


@system.actor(orders, batch_size=int(os.environ.get("BATCH_SIZE", "20")))
async def handle(order: Order) -> None:
    if DELAY:
        await trio.sleep(DELAY)
    p = orders.partition_of(order)
    epoch = _epoch(p)
    client = system.client()
    if HOG and await client.execute("SET", f"{APP}:hog-flag", PID, "NX"):
        await client.execute("RPUSH", f"{APP}:hog", f"{PID}:{p}:{epoch}:{order.seq}")
        print(f"hogging the CPU for {HOG}s on partition {p} epoch {epoch}", flush=True)
        time.sleep(HOG)  # noqa: ASYNC251 - on purpose: blocks the loop, no checkpoint
        print("hog done", flush=True)
    await client.execute("RPUSH", f"{APP}:handled", f"{order.key}:{order.seq}:{PID}:{p}:{epoch}")


if __name__ == "__main__":
    print(f"worker starting pid={PID}", flush=True)
    trio.run(system.start)
    print("worker stopped cleanly", flush=True)
