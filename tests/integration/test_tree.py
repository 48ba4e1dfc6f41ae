"""The supervision tree against real Redis: each partition actor has its own restart intensity."""

from __future__ import annotations

import collections
from typing import Any

import trio

from actorstream import LeaseTiming, Record, RestartPolicy, System, running

FAST_LEASES = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    order_id: int
    amount: int


async def test_partitions_do_not_share_one_restart_intensity(redis_url: str) -> None:
    """Four partitions fail three times each: contained, nothing gives up, all handled.

    With one intensity of 3 shared by the worker's partitions (0.1) the worker gave up; with one
    per partition actor nothing gives up and every event is handled.
    """
    system = System(
        "tree", redis_url, install_signal_handlers=False, lease_timing=FAST_LEASES,
        restart_policy=RestartPolicy(max_restarts=3, within=60.0, backoff_initial=0.01,
                                     backoff_max=0.05),
    )
    orders = system.stream("orders", record=Order, partitions=4, key="order_id")
    attempts: collections.Counter[int] = collections.Counter()
    handled: set[int] = set()

    @system.actor(orders, max_deliveries=10)
    async def bill(order: Order) -> None:
        attempts[order.order_id] += 1
        if attempts[order.order_id] <= 3:
            raise RuntimeError(f"crash {attempts[order.order_id]} of {order.order_id}")
        handled.add(order.order_id)

    keys: dict[int, int] = {}
    for key in range(1000):  # one key per partition
        keys.setdefault(orders.partition_of(Order(order_id=key, amount=0)), key)
        if len(keys) == 4:
            break
    async with system:
        await orders.send_many([Order(order_id=k, amount=0) for k in keys.values()])
        async with running(system) as worker:
            with trio.fail_after(30):
                while len(handled) < 4:
                    await trio.sleep(0.02)
            stats: Any = worker.statistics()
    assert handled == set(keys.values())
    assert not stats.supervisor.gave_up
    # Handler failures do not even restart their partition actor: they are contained in it.
    # Four partitions failing together look like an outage: they back off,
    # keep their deliveries, and dead-letter nothing.
    assert stats.supervisor.total_restarts == 0
    assert sorted(p.failed for p in stats.partitions) == [3, 3, 3, 3]
    assert sum(p.dead_lettered for p in stats.partitions) == 0
