"""Containment of handler failures, in process against a real redis-server.

The slow, multi-process acceptance scenarios are in tests/chaos/test_containment.py; these are
the quick checks of each path: classification, an outage backing off and recovering, a batch
handler's poison event isolated, the iterator form restarting under its own budget, and
``on_error`` taking precedence. docs/dead-letters.md ("Poison or outage") states the rule.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

from actorstream import ConfigError, LeaseTiming, Outcome, Record, RestartPolicy, System, running
from actorstream._core.deadletter import DeadLetter
from actorstream._transport import Client

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    order_id: int
    amount: int


class PoisonError(ValueError):
    pass


def make_system(url: str, **kw: Any) -> System:
    return System("shop", url, install_signal_handlers=False, lease_timing=FAST, **kw)


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.02)


async def dead_letters(url: str, partition: int = 0) -> list[DeadLetter]:
    async with Client.from_url(url) as client:
        raw = await client.execute("XRANGE", f"as:{{shop:orders:{partition}}}:dlq", "-", "+")
    return [DeadLetter.parse(i, flat) for i, flat in raw]


def test_classification_settings_are_validated() -> None:
    system = System("shop", "redis://127.0.0.1:1/0", install_signal_handlers=False)
    orders = system.stream("orders", record=Order)
    with pytest.raises(ConfigError, match="poison_errors: 'ValueError' is not an exception"):
        system.actor(orders, poison_errors=("ValueError",))
    with pytest.raises(ConfigError, match="ValueError named in both"):
        system.actor(orders, poison_errors=ValueError, transient_errors=(ValueError,))
    with pytest.raises(ConfigError, match=r"backoff_max must be a number of seconds >= 0\.1"):
        system.actor(orders, backoff_max=0)


async def test_poison_type_is_dead_lettered_on_its_first_failure(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    calls: list[int] = []

    @system.actor(orders, poison_errors=(PoisonError,))
    async def bill(order: Order) -> None:
        calls.append(order.amount)
        if order.amount % 2:
            raise PoisonError(f"order {order.amount} cannot be billed")

    async with system:
        await orders.send_many([Order(order_id=1, amount=i) for i in range(6)])
    async with running(system) as runtime:

        async def done() -> bool:
            return len(await dead_letters(redis_url)) == 3 and len(calls) == 6

        await wait_until(done)
        (part,) = runtime.statistics().partitions
    assert calls == list(range(6))  # one call each: no redelivery, no backoff
    letters = await dead_letters(redis_url)
    assert {dl.kind for dl in letters} == {"poison_error"}
    assert {dl.deliveries for dl in letters} == {1}
    assert letters[0].error == "PoisonError: order 1 cannot be billed"
    assert re.search(r'test_failure_paths\.py", line \d+, in bill', letters[0].trace)
    assert part.restarts == 0 and part.dead_lettered == 3 and part.failed == 3


async def test_an_outage_backs_off_keeps_deliveries_and_recovers(redis_url: str) -> None:
    """Every event fails for a while (two distinct events in a row): backing-off, visible in
    statistics, no dead letter, no delivery spent on the waiting event; then all handled."""
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    down = True
    handled: list[int] = []
    attempts = 0

    @system.actor(orders, backoff_max=0.2)
    async def bill(order: Order) -> None:
        nonlocal attempts
        if down and order.amount >= 2:
            attempts += 1
            raise RuntimeError("database unavailable")
        handled.append(order.amount)

    async with system:
        await orders.send_many([Order(order_id=1, amount=i) for i in range(10)])
    async with running(system) as runtime, Client.from_url(redis_url) as client:

        async def backing_off() -> bool:
            (part,) = runtime.statistics().partitions
            return part.state == "backing-off"

        await wait_until(backing_off)
        await trio.sleep(1.0)
        (waiting,) = runtime.statistics().partitions
        pending = await client.execute(
            "XPENDING", "as:{shop:orders:0}:s", "bill", "-", "+", 10
        )
        down = False

        async def all_handled() -> bool:
            return len(handled) >= 9

        await wait_until(all_handled)
        await trio.sleep(0.2)
        (after,) = runtime.statistics().partitions
    # Event 2 was presumed poison (redelivered at once, then dead-lettered: the one dead letter
    # an outage may cost); event 3 failing too made it an outage: it waits, keeping deliveries.
    assert handled == [0, 1, *range(3, 10)]
    assert [dl.deliveries for dl in await dead_letters(redis_url)] == [3]
    assert waiting.streak == 2 and waiting.backoff is not None and waiting.backoff <= 0.2
    assert waiting.last_error == "RuntimeError: database unavailable"
    waiting_event = next(p for p in pending if int(p[3]) >= 1)
    assert int(waiting_event[3]) == 1  # retried in process: still its first delivery
    assert attempts > 4  # retried while it lasted, with backoff
    assert after.state == "running" and after.streak == 0 and after.restarts == 0


async def test_transient_types_never_spend_a_delivery(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    failures = 0

    @system.actor(orders, transient_errors=(ConnectionError,), backoff_max=0.1, max_deliveries=1)
    async def bill(order: Order) -> None:
        nonlocal failures
        if failures < 5:
            failures += 1
            raise ConnectionResetError("connection reset by peer")

    async with system:
        await orders.send(Order(order_id=1, amount=1))
    async with running(system) as runtime:

        async def handled() -> bool:
            return runtime.statistics().partitions[0].processed == 1

        await wait_until(handled)
    assert failures == 5
    assert await dead_letters(redis_url) == []  # max_deliveries=1, yet nothing dead-lettered


async def test_a_batch_handlers_poison_event_is_isolated(redis_url: str) -> None:
    """A batch fails: its events are handled again one at a time, and only the poison one is
    dead-lettered; no restart."""
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    handled: list[int] = []

    @system.actor(orders, batch=True, batch_size=10)
    async def bill(batch: list[Order]) -> None:
        if any(o.amount == 4 for o in batch):
            raise ValueError("order 4 is poison")
        handled.extend(o.amount for o in batch)

    async with system:
        await orders.send_many([Order(order_id=i % 3, amount=i) for i in range(10)])
    async with running(system) as runtime:

        async def done() -> bool:
            return len(handled) == 9

        await wait_until(done)
        await trio.sleep(0.2)
        (part,) = runtime.statistics().partitions
    assert handled == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    (dl,) = await dead_letters(redis_url)
    assert dl.kind == "max_deliveries" and "order 4 is poison" in dl.error
    assert part.restarts == 0 and part.dead_lettered == 1


async def test_iterator_form_restarts_under_its_own_budget_and_never_gives_up(
    redis_url: str,
) -> None:
    """An iterator handler owns its loop, so a failure restarts its actor; past the (tiny)
    restart intensity the partition backs off instead of ending the worker."""
    system = make_system(
        redis_url,
        restart_policy=RestartPolicy(max_restarts=1, within=60.0, backoff_initial=0.01,
                                     backoff_max=0.02),
    )
    orders = system.stream("orders", record=Order)
    seen: list[int] = []

    @system.actor(orders, iterator=True, max_deliveries=100, backoff_max=0.2)
    async def bill(events: Any) -> None:
        async for order in events:
            seen.append(order.amount)
            if order.amount == 1 and seen.count(1) <= 4:
                raise RuntimeError("iterator body failed")

    async with system:
        await orders.send_many([Order(order_id=1, amount=i) for i in range(3)])
    async with running(system) as runtime:

        async def done() -> bool:
            return 2 in seen

        await wait_until(done)
        stats = runtime.statistics()
    (part,) = stats.partitions
    assert seen == [0, 1, 1, 1, 1, 1, 2]  # redelivered first each time, in order
    assert part.restarts == 4 and part.failed == 4
    assert not stats.supervisor.gave_up


async def test_on_error_takes_precedence(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    hooked: list[int] = []

    async def hook(order: Order, exc: Exception, info: Any) -> Outcome:
        hooked.append(order.amount)
        return Outcome.SKIP if order.amount == 1 else Outcome.DEAD_LETTER

    @system.actor(orders, on_error=hook, poison_errors=(ValueError,))
    async def bill(order: Order) -> None:
        if order.amount in (1, 2):
            raise ValueError(f"bad {order.amount}")

    async with system:
        await orders.send_many([Order(order_id=1, amount=i) for i in range(4)])
    async with running(system) as runtime:

        async def done() -> bool:
            return runtime.statistics().partitions[0].processed == 2 and len(hooked) == 2

        await wait_until(done)
    assert hooked == [1, 2]
    (dl,) = await dead_letters(redis_url)
    assert dl.kind == "handler"  # the hook's choice, not poison_errors'


def test_redelivery_reads_from_the_id_just_before() -> None:
    from actorstream._tree.handling import _previous_id

    assert _previous_id(b"1700000000000-3") == "1700000000000-2"
    assert _previous_id(b"1700000000000-0") == "1699999999999-18446744073709551615"
    assert _previous_id(b"0-0") == "0-0"
