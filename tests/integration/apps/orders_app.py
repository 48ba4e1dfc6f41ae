"""A worker app for subprocess tests: records every handled event in Redis.

Environment: ACTORSTREAM_REDIS_URL, APP_NAME, PARTITIONS, HANDLE_DELAY (seconds per event).
Each handled event is RPUSHed to `<app>:handled` as "key:seq:worker_pid" *before* the handler
returns, so the list is the ground truth of handling (at-least-once: duplicates are visible).
"""

from __future__ import annotations

import logging
import os

import trio

from actorstream import LeaseTiming, Record, System

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

APP = os.environ.get("APP_NAME", "orders")
DELAY = float(os.environ.get("HANDLE_DELAY", "0"))

system = System(
    APP,
    lease_timing=LeaseTiming(
        ttl=float(os.environ.get("LEASE_TTL", "3")),
        renew_interval=float(os.environ.get("LEASE_RENEW", "1")),
        heartbeat_interval=0.5,
        member_timeout=float(os.environ.get("MEMBER_TIMEOUT", "3")),
        self_fence_margin=0.5,
    ),
    shutdown_grace=10.0,
)


class Order(Record):
    key: int
    seq: int


orders = system.stream("orders", record=Order, partitions=int(os.environ.get("PARTITIONS", "8")),
                       key="key")


@system.actor(orders, batch_size=int(os.environ.get("BATCH_SIZE", "50")))
async def handle(order: Order) -> None:
    if DELAY:
        await trio.sleep(DELAY)
    await system.client().execute(
        "RPUSH", f"{APP}:handled", f"{order.key}:{order.seq}:{os.getpid()}"
    )


if __name__ == "__main__":
    print("worker starting", flush=True)
    trio.run(system.start)
    print("worker stopped cleanly", flush=True)
