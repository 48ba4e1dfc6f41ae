"""Per-customer running totals with an output stream, exactly once.

    export ACTORSTREAM_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/running_totals.py          # a worker; it produces its own orders with a timer
    actorstream table running_totals:totals    # (from examples/) the committed totals

Each order adds to its customer's total in the table ``totals`` and sends one ``Receipt``
carrying the total so far. With ``processing="exactly_once"`` the table change, the receipt and
the order's ack are one Redis transaction: kill the worker (or Redis, with AOF) at any moment and
every customer's total is exact, every receipt exists once, and each receipt's total is the sum
of that customer's orders up to it.
"""

from __future__ import annotations

import logging
import random

import trio

from actorstream import Record, System

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("running_totals")

system = System("totals")


class Order(Record):
    customer: str
    order_id: int
    amount: int  # cents


class Total(Record):
    orders: int
    amount: int


class Receipt(Record):
    customer: str
    order_id: int
    total: int  # the customer's total so far, this order included


orders = system.stream("orders", record=Order, partitions=4, key="customer")
receipts = system.stream("receipts", record=Receipt, partitions=4, key="customer")
totals = system.table("totals", value=Total, default=lambda: Total(0, 0))


@system.actor(orders, tables=[totals], processing="exactly_once")
async def add_up(order: Order) -> None:
    before = totals[order.customer]
    now = Total(before.orders + 1, before.amount + order.amount)
    totals[order.customer] = now  # committed with this order's ack, or not at all
    await receipts.send(Receipt(order.customer, order.order_id, now.amount))  # held until then


@system.actor(receipts)
async def show(receipt: Receipt) -> None:
    log.info("%s: order %d, total %.2f", receipt.customer, receipt.order_id,
             receipt.total / 100)


_next_id = 0


@system.timer(every=1.0)
async def shop() -> None:
    """A few orders a second, so the example has something to add up."""
    global _next_id
    batch = []
    for _ in range(5):
        _next_id += 1
        batch.append(Order(random.choice(["ann", "bob", "cy"]), _next_id,
                           random.randint(100, 5000)))
    await orders.send_many(batch)


if __name__ == "__main__":
    trio.run(system.start)
