"""Dead letters end to end: poison events are set aside, the partition keeps going, and after
the "fix" they are replayed and handled.

    ACTORSTREAM_REDIS_URL=redis://127.0.0.1:6390/0 python examples/dead_letters.py

It uses the app name ``dead-letters-example`` and deletes its keys at the start. The same can be
done from a shell while a worker runs::

    actorstream dlq list examples/dead_letters.py:system
    actorstream dlq replay examples/dead_letters.py:system --dry-run
"""

from __future__ import annotations

from typing import Any

import trio

from actorstream import Record, RestartPolicy, System, running
from actorstream.dlq import Selection, count_dead_letters, list_dead_letters, replay_dead_letters

system = System(
    "dead-letters-example",
    # A poison event crashes its partition actor max_deliveries times: allow it.
    restart_policy=RestartPolicy(max_restarts=50, within=60.0, backoff_max=0.5),
    install_signal_handlers=False,
)


class Payment(Record):
    account: int
    cents: int


payments = system.stream("payments", record=Payment, partitions=4, key="account")
handled: list[Payment] = []
refuse_negative = True


# batch_size=1: at a crash only the failing event is in flight.
@system.actor(payments, max_deliveries=2, batch_size=1)
async def book(payment: Payment) -> None:
    if refuse_negative and payment.cents < 0:
        raise ValueError(f"negative amount {payment.cents} for account {payment.account}")
    handled.append(payment)


async def wait_for(
    condition: Any, what: str, timeout: float = 30.0
) -> None:
    with trio.fail_after(timeout):
        while not await condition():  # noqa: ASYNC110 - polling Redis, not a trio event
            await trio.sleep(0.05)
    print(f"  ok: {what}")


async def main() -> None:
    global refuse_negative
    async with system:
        client = system.client()
        keys = await client.execute("KEYS", f"as:{{{system.name}*")
        if keys:
            await client.execute("DEL", *keys)

        events = [Payment(account=i % 5, cents=(-50 if i in (3, 11) else 100 + i))
                  for i in range(20)]
        await payments.send_many(events)
        # And one that is not even a Payment: dead-lettered at once, the handler never sees it.
        await client.execute("XADD", payments.stream_key(0), "*", "f", "json", "d", b"{oops")

        print("1. run a worker: 18 payments booked, 2 refused, 1 undecodable")
        async with running(system):

            async def settled() -> bool:
                return len(handled) == 18 and len(await list_dead_letters(system)) == 3

            await wait_for(settled, "18 booked, 3 dead letters")

        print("2. what is in the dead letters")
        for dl in await list_dead_letters(system):
            print(f"  {dl.dlq_id} {dl.stream}[{dl.partition}] {dl.kind}: {dl.error[:60]}")
        for c in await count_dead_letters(system):
            print(f"  {c.stream}[{c.partition}] {c.kind}: {c.count}")

        print("3. fix the handler, replay the refused payments (not the undecodable one)")
        refuse_negative = False
        report = await replay_dead_letters(system, Selection(kind="max_deliveries"))
        for dl, new_id in report.replayed:
            print(f"  replayed {dl.original_id} -> {dl.stream}[{dl.partition}] as {new_id}")
        async with running(system):

            async def all_booked() -> bool:
                return len(handled) == 20

            await wait_for(all_booked, "all 20 booked")
        left = await list_dead_letters(system)
        print(f"4. left in the dead letters: {[dl.kind for dl in left]}")


if __name__ == "__main__":
    trio.run(main)
