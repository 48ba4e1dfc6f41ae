"""Order per key, many in flight: an I/O-bound handler (a 10 ms call per payment).

Each customer's payments must be applied in order; different customers are independent. With
``ordering="key"`` a partition keeps up to ``concurrency`` customers in flight, one payment of
each at a time, in stream order.

    export ACTORSTREAM_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/per_key.py                # send 2,000 payments, handle them, print figures
    python examples/per_key.py worker         # or: run one or more workers ...
    python examples/per_key.py produce        # ... and send payments from another shell
"""

from __future__ import annotations

import sys

import trio

from actorstream import Record, System, running

system = System("perkey")


class Payment(Record):
    customer: int
    seq: int  # the customer's payment number, in sending order
    amount: int


payments = system.stream("payments", record=Payment, partitions=4, key="customer")

#: What the handler saw, per customer: the seq numbers, in the order they were applied.
applied: dict[int, list[int]] = {}
expected = 0  # how many payments the demo waits for
all_applied = trio.Event()


async def call_payment_service(payment: Payment) -> None:
    """Stands in for an HTTP call or a database write: 10 ms of waiting, no CPU."""
    await trio.sleep(0.01)


@system.actor(payments, ordering="key", concurrency=256)
async def apply(payment: Payment) -> None:
    await call_payment_service(payment)
    applied.setdefault(payment.customer, []).append(payment.seq)
    if expected and sum(map(len, applied.values())) >= expected:
        all_applied.set()


def workload(customers: int = 200, per_customer: int = 10) -> list[Payment]:
    return [
        Payment(customer=c, seq=s, amount=10 * s)
        for s in range(per_customer)
        for c in range(customers)
    ]


async def produce() -> None:
    async with system:
        sent = workload()
        await payments.send_many(sent)
        print(f"sent {len(sent)} payments")


async def demo() -> None:
    """Send, handle in this process, and check the order per customer."""
    global expected
    sent = workload()
    expected = len(sent)
    async with system:
        await payments.send_many(sent)
        started = trio.current_time()
        async with running(system):
            with trio.fail_after(120):
                await all_applied.wait()
        took = trio.current_time() - started
    in_order = all(seqs == sorted(seqs) for seqs in applied.values())
    print(f"handled {len(sent)} payments of {len(applied)} customers in {took:.2f}s "
          f"({len(sent) / took:.0f}/s with a 10 ms handler); in order per customer: {in_order}")


if __name__ == "__main__":
    mode = sys.argv[1:2]
    trio.run({"worker": system.start, "produce": produce}.get(mode[0] if mode else "", demo))
