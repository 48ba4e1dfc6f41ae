"""Quick start: bill orders, strictly in order per order_id, on 16 partitions.

    export ACTORSTREAM_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/quickstart.py worker      # run one or more workers
    python examples/quickstart.py produce     # send 1,000 orders
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import trio

from actorstream import Record, System

system = System("quickstart")


class Order(Record):
    order_id: int
    amount: int
    created: datetime


orders = system.stream("orders", record=Order, partitions=16, key="order_id")


@system.actor(orders)
async def bill(order: Order) -> None:
    print(f"billing order {order.order_id}: {order.amount}")


async def produce() -> None:
    async with system:
        now = datetime.now(UTC)
        await orders.send_many(
            [Order(order_id=i % 100, amount=i, created=now) for i in range(1000)]
        )
        print("sent 1000 orders")


if __name__ == "__main__":
    trio.run(produce if sys.argv[1:] == ["produce"] else system.start)
