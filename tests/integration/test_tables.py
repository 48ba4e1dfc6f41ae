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
            stats = worker.statistics().partitions
            assert sum((p.table_keys or {}).get("counts", 0) for p in stats) == 5
            assert all(p.restore_seconds is not None for p in stats)
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


TABLE_APP = '''
from actorstream import Record, System

system = System("clitbl")

class Total(Record):
    customer: str
    orders: int
    amount: int

orders = system.stream("orders", partitions=4, key="customer")
counts = system.table("counts", value=int, default=0)
totals = system.table("totals", value=Total)

@system.actor(orders, tables=[counts, totals])
async def tally(order) -> None:
    pass
'''


def test_the_table_command_prints_committed_values(redis_server: Any, tmp_path: Any) -> None:
    import subprocess
    import sys

    from actorstream._core.hashing import partition_for
    from actorstream._core.keys import table_key

    (tmp_path / "tblapp.py").write_text(TABLE_APP)
    for customer, n in (("ann", 3), ("bob", 5)):
        p = partition_for(customer, 4)
        redis_server_call(redis_server, "HSET", table_key("clitbl", "orders", p, "counts"),
                          customer, str(n))
    redis_server_call(redis_server, "HSET",
                      table_key("clitbl", "orders", partition_for("ann", 4), "totals"), "ann",
                      '{"customer":"ann","orders":3,"amount":30}')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actorstream", "table", *args], capture_output=True,
            text=True, timeout=60, cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "ACTORSTREAM_REDIS_URL": redis_server.url},
        )

    every = cli("tblapp:counts")
    assert every.returncode == 0, every.stderr
    assert sorted(every.stdout.splitlines()) == ['"ann" 3', '"bob" 5']
    one = cli("tblapp:totals", "ann")
    assert one.returncode == 0 and one.stdout.strip() == (
        '{"customer": "ann", "orders": 3, "amount": 30}'
    )
    missing = cli("tblapp:counts", "zed")
    assert missing.returncode == 1 and "has no key 'zed'" in missing.stderr
    unknown = cli("tblapp:nope")
    assert unknown.returncode == 2 and "unknown table 'nope'" in unknown.stderr
    assert "(tables: counts, totals)" in unknown.stderr


def redis_server_call(server: Any, *args: str) -> None:
    import subprocess

    subprocess.run(["redis-cli", "-p", str(server.port), *args], check=True,
                   capture_output=True)


async def test_the_running_totals_example_adds_up(redis_server: Any, monkeypatch: Any) -> None:
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.setenv("ACTORSTREAM_REDIS_URL", redis_server.url)
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "examples"))
    sys.modules.pop("running_totals", None)
    example = importlib.import_module("running_totals")
    example.system.settings = example.system.settings.__class__(
        install_signal_handlers=False, lease_timing=FAST
    )
    async with example.system:
        async with running(example.system):
            await trio.sleep(3.5)
        totals = await example.totals.snapshot()
        receipts = []
        for p in range(4):
            for _id, flat in await example.system.client().execute(
                "XRANGE", example.receipts.stream_key(p), "-", "+"
            ):
                receipts.append(example.receipts.format_decoder(flat))
        orders = []
        for p in range(4):
            for _id, flat in await example.system.client().execute(
                "XRANGE", example.orders.stream_key(p), "-", "+"
            ):
                orders.append(example.orders.format_decoder(flat))
    assert receipts and totals
    handled = {r.order_id for r in receipts}
    assert len(handled) == len(receipts)  # one receipt per order
    for customer, total in totals.items():
        mine = [o for o in orders if o.customer == customer and o.order_id in handled]
        assert total.amount == sum(o.amount for o in mine)
        assert total.orders == len(mine)
        assert max(r.total for r in receipts if r.customer == customer) == total.amount


async def test_a_commit_after_the_epoch_moved_is_fenced_whole(redis_server: Any) -> None:
    """Another owner took the partition (its epoch moved) while a handler ran: Redis refuses
    the commit, so neither the table change, nor the output, nor the ack lands; the event is
    handled again by the next owner, once."""
    from actorstream._core.keys import epoch_key

    system = System("fence", redis_server.url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order, partitions=1, key="customer")
    out = system.stream("out", record=Order, partitions=1, key="customer")
    counts = system.table("counts", value=int, default=0)
    entered = trio.Event()
    release = trio.Event()
    calls = 0

    @system.actor(orders, tables=[counts], processing="exactly_once")
    async def tally(order: Order) -> None:
        nonlocal calls
        calls += 1
        counts[order.customer] += 1
        await out.send(order)
        entered.set()
        await release.wait()

    async with system:
        client = system.client()
        await orders.send(Order("ann", 1))
        async with running(system) as worker:
            with trio.fail_after(15):
                await entered.wait()
            await client.execute("INCR", epoch_key("fence", "orders", 0, "tally"))
            release.set()
            with trio.fail_after(20):
                while not await client.execute("XLEN", out.stream_key(0)):
                    await trio.sleep(0.05)
            await trio.sleep(0.5)
            errors = [p.last_error or "" for p in worker.statistics().partitions]
        assert calls == 2  # once fenced, once by the next owner
        assert await counts.read("ann") == 1
        assert await client.execute("XLEN", out.stream_key(0)) == 1
        assert any("FENCED" in e for e in errors), errors
