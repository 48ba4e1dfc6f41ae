"""The app behind ``actorstream demo``: a shop billing orders on 8 partitions.

The handler fails now and then so that ``top`` has something to show: a transient error
(the partition actor crashes, its supervisor restarts it, the event is replayed and succeeds)
and poison orders (they always fail, so after ``max_deliveries`` they are dead-lettered).

It ships inside the package (so ``actorstream demo`` works from a wheel). Run its parts
yourself::

    actorstream worker actorstream._demo.app:system      # a worker (run several)
    actorstream top actorstream._demo.app:system         # watch it
    python -m actorstream._demo.app produce              # a producer
"""

from __future__ import annotations

import random
import sys

import trio
import trio.lowlevel

from actorstream import Record, RestartPolicy, System

system = System(
    "demo",
    # Poison orders crash a partition several times before being dead-lettered: allow it.
    restart_policy=RestartPolicy(max_restarts=500, within=60.0, backoff_initial=0.05,
                                 backoff_max=1.0),
)


class Order(Record):
    order_id: int
    customer: str
    amount: int


orders = system.stream("orders", record=Order, partitions=8, key="order_id")

#: An order whose amount is a multiple of this always fails (a poison event).
POISON_EVERY = 997
#: Roughly one handler call in this many fails once (a transient crash).
TRANSIENT_ONE_IN = 400

_rng = random.Random()
#: What the producer did (read by ``actorstream demo`` for its summary).
stats = {"sent": 0}
_failed_once: set[int] = set()


@system.actor(orders, max_deliveries=3, batch_size=10)
async def bill(order: Order) -> None:
    if order.amount % POISON_EVERY == 0:
        raise ValueError(f"order {order.order_id}: amount {order.amount} is not billable")
    if order.order_id not in _failed_once and _rng.randrange(TRANSIENT_ONE_IN) == 0:
        _failed_once.add(order.order_id)
        raise ConnectionError(f"payment gateway timed out for order {order.order_id}")
    await trio.lowlevel.checkpoint()


async def produce(rate: float = 200.0, *, limit: int | None = None) -> int:
    """Send orders at about ``rate`` per second (in batches of a tenth of a second)."""
    sent = 0
    batch = max(1, int(rate / 10))
    next_id = _rng.randrange(1_000_000)
    while limit is None or sent < limit:
        n = batch if limit is None else min(batch, limit - sent)
        events = []
        for _ in range(n):
            next_id += 1
            amount = _rng.randrange(1, 100_000)
            if amount % POISON_EVERY == 0:
                amount += 1
            if _rng.randrange(int(rate * 4) or 1) == 0:
                amount = POISON_EVERY * _rng.randrange(1, 50)
            events.append(Order(order_id=next_id, customer=f"c{next_id % 50}", amount=amount))
        await orders.send_many(events)
        sent += n
        stats["sent"] += n
        await trio.sleep(0.1)
    return sent


async def _produce_main() -> None:
    async with system:
        await produce()


if __name__ == "__main__":
    trio.run(_produce_main if sys.argv[1:] == ["produce"] else system.start)
