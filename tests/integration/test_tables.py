"""Tables and exactly-once outputs against real Redis: values committed with the acks."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actorstream import ConfigError, LeaseTiming, Record, System, TableError, running

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    customer: str
    amount: int


class Total(Record):
    customer: str
    orders: int
    amount: int


async def wait_for(pred: Any, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.02)


def make(url: str, processing: str = "at_least_once") -> tuple[System, Any, Any, Any, Any]:
    system = System("tbl", url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order, partitions=4, key="customer")
    totals = system.stream("totals", record=Total, partitions=2, key="customer")
    counts = system.table("counts", value=int, default=0)
    latest = system.table("latest", value=Total)
    return system, orders, totals, counts, latest


async def test_counts_and_records_are_committed_and_read_back(redis_url: str) -> None:
    system, orders, _totals, counts, latest = make(redis_url)
    failed_once: set[int] = set()

    @system.actor(orders, tables=[counts, latest])
    async def tally(order: Order) -> None:
        counts[order.customer] += 1
        before = latest.get(order.customer, Total(order.customer, 0, 0))
        latest[order.customer] = Total(order.customer, before.orders + 1,
                                       before.amount + order.amount)
        if order.amount == 13 and 13 not in failed_once:
            failed_once.add(13)
            raise RuntimeError("after writing: nothing of this call may stay")

    sent = [Order(f"c{i % 5}", i) for i in range(40)]
    async with system:
        await orders.send_many(sent)
        async with running(system) as worker:
            def done() -> bool:
                return sum(p.processed for p in worker.statistics().partitions) >= 40
            await wait_for(done)
        snapshot = await counts.snapshot()
        assert snapshot == {f"c{k}": 8 for k in range(5)}
        assert await counts.read("c3") == 8
        assert await counts.read("nobody") == 0
        assert await latest.read("nobody") is None
        c3 = await latest.read("c3")
        assert c3 == Total("c3", 8, sum(o.amount for o in sent if o.customer == "c3"))


async def test_exactly_once_outputs_are_held_until_the_commit(redis_server: Any) -> None:
    system, orders, totals, counts, _latest = make(redis_server.url)
    seen: list[int] = []

    @system.actor(orders, tables=[counts], processing="exactly_once")
    async def tally(order: Order) -> None:
        counts[order.customer] += 1
        entry_id = await totals.send(Total(order.customer, counts[order.customer], order.amount))
        assert entry_id == ""  # held: no id before the commit
        if order.amount == 7 and 7 not in seen:
            seen.append(7)
            raise RuntimeError("fails once after sending: the held output is dropped")

    @system.actor(totals)
    async def collect(total: Total) -> None:
        seen.append(total.orders * 1000 + total.amount)

    async with system:
        await orders.send_many([Order(f"c{i % 3}", i) for i in range(30)])
        async with running(system):
            await wait_for(lambda: len(seen) >= 31)
            await trio.sleep(0.3)
    outputs = sorted(seen[1:]) if seen[0] == 7 else sorted(x for x in seen if x != 7)
    assert len(outputs) == 30
    by_amount = {x % 1000: x // 1000 for x in outputs}
    # each output's count is its position in its customer's sequence + 1
    for i in range(30):
        assert by_amount[i] == i // 3 + 1


def test_bad_declarations_are_refused_with_the_fix() -> None:
    system = System("tblcfg", "redis://127.0.0.1:1/0")
    orders = system.stream("orders", record=Order, partitions=2, key="customer")
    with pytest.raises(ConfigError, match="value must be int, float, str, bool or a Record"):
        system.table("bad", value=dict)
    with pytest.raises(ConfigError, match="default: table 'c2' holds int values, got str"):
        system.table("c2", value=int, default="zero")
    counts = system.table("counts", value=int, default=0)
    with pytest.raises(ConfigError, match="need the event or batch form"):
        system.actor(orders, tables=[counts], iterator=True)(noop)
    with pytest.raises(ConfigError, match="processing must be one of"):
        system.actor(orders, tables=[counts], processing="twice")(noop)

    @system.actor(orders, tables=[counts])
    async def first(order: Order) -> None: ...

    with pytest.raises(ConfigError, match="already written by actor 'first'"):
        system.actor(orders, name="second", tables=[counts])(noop)
    with pytest.raises(TableError, match="used outside a handler"):
        counts["x"]


async def noop(event: Any) -> None: ...
