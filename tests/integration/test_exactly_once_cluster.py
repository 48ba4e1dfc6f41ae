"""Exactly-once on a Redis Cluster: outputs to other slots go through the partition's outbox and
are forwarded with the idempotent, fenced ``forward`` script (docs/state.md)."""

from __future__ import annotations

import collections
from typing import Any

import pytest
import trio

from actorstream import LeaseTiming, Record, System, running
from actorstream._core import keys
from actorstream._core.errors import FencedError
from actorstream._core.outbox import TARGET_FIELD, marks_key
from actorstream._transport import Client, slot_of
from actorstream._tree import scripts
from actorstream.testing import RedisCluster

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


def make(url: str, app: str, **actor: Any) -> tuple[System, Any, Any, Any]:
    system = System(app, url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order, partitions=4, key="customer")
    totals = system.stream("totals", record=Total, partitions=3, key="customer")
    counts = system.table("counts", value=int, default=0)
    failed: set[int] = set()

    @system.actor(orders, tables=[counts], processing="exactly_once", **actor)
    async def tally(order: Order) -> None:
        counts[order.customer] += 1
        await totals.send(Total(order.customer, counts[order.customer], order.amount))
        if order.amount % 17 == 5 and order.amount not in failed:
            failed.add(order.amount)
            raise RuntimeError("fails once after sending: its held output is dropped")

    return system, orders, totals, counts


async def read_totals(client: Client, totals: Any) -> list[Total]:
    out = []
    for p in range(totals.partitions):
        for _id, flat in await client.execute("XRANGE", totals.stream_key(p), "-", "+"):
            out.append(totals.format_decoder(flat))
    return out


async def outbox_lengths(client: Client, app: str) -> int:
    return sum(
        [int(await client.execute("XLEN", keys.outbox_key(app, "orders", p, "tally")))
         for p in range(4)]
    )


def check_exact(outputs: list[Total], sent: list[Order]) -> None:
    """Every input once in the outputs, each with its position in its customer's sequence."""
    assert len(outputs) == len(sent)
    assert sorted(t.amount for t in outputs) == sorted(o.amount for o in sent)
    per_customer = collections.defaultdict(list)
    for t in outputs:
        per_customer[t.customer].append(t.orders)
    for customer, counts in per_customer.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), customer


@pytest.fixture
def cluster3(cluster_3: RedisCluster) -> RedisCluster:
    for node in cluster_3.primaries:
        node.call("FLUSHALL")
    return cluster_3


async def test_exactly_once_on_three_primaries_forwards_each_output_once(
    cluster3: RedisCluster,
) -> None:
    system, orders, totals, counts = make(cluster3.url, "eoc")
    # the outputs really cross slots and nodes
    assert len({cluster3.owner_of(slot_of(totals.stream_key(p))).port for p in range(3)}) > 1
    sent = [Order(f"c{i % 7}", i) for i in range(120)]
    async with system:
        client = system.client()
        await orders.send_many(sent)
        async with running(system) as worker:
            with trio.fail_after(30):
                while len(await read_totals(client, totals)) < len(sent):
                    await trio.sleep(0.05)
            await trio.sleep(0.3)
            stats = worker.statistics().partitions
        outputs = await read_totals(client, totals)
        assert await outbox_lengths(client, "eoc") == 0  # forwarded, then trimmed
        assert sum(p.forwarded for p in stats) == len(sent)
        assert all(p.outbox == 0 for p in stats)
        snapshot = await counts.snapshot()
    check_exact(outputs, sent)
    assert snapshot == {f"c{k}": sum(1 for o in sent if o.customer == f"c{k}") for k in range(7)}


async def test_the_forward_script_appends_each_outbox_entry_once_and_is_fenced(
    redis_url: str,
) -> None:
    target = keys.stream_key("fw", "totals", 1)
    marks = marks_key(target)

    def call(epoch: int, *ids: str) -> tuple[list[str], list[Any]]:
        args: list[Any] = ["orders:2:tally", epoch]
        for i in ids:
            args += [i, 2, "id", i]
        return [target, marks], args

    async with Client.from_url(redis_url) as client:
        assert await client.evalsha(scripts.FORWARD, *call(3, "5-0", "5-1")) == [2, 0]
        # retried after a crash before the outbox was trimmed, with one more entry
        assert await client.evalsha(scripts.FORWARD, *call(3, "5-0", "5-1", "7-0")) == [1, 2]
        # a new owner (a later epoch) forwards what is left: nothing twice
        assert await client.evalsha(scripts.FORWARD, *call(4, "7-0")) == [0, 1]
        assert await client.execute("HGET", marks, "orders:2:tally") == b"4 7-0"
        with pytest.raises(FencedError, match="forward mark of orders:2:tally is at epoch 4"):
            await client.evalsha(scripts.FORWARD, *call(3, "8-0"))
        entries = await client.execute("XRANGE", target, "-", "+")
        assert [e[1][1] for e in entries] == [b"5-0", b"5-1", b"7-0"]


async def test_a_new_owner_forwards_what_a_crashed_one_left(cluster3: RedisCluster) -> None:
    """A previous owner committed outputs to its outbox and crashed mid-forward: the first
    entry was appended to its target (the mark moved) but the outbox not trimmed. The next
    owner forwards the rest, the first not again."""
    app = "eoleft"
    system, _orders, totals, _counts = make(cluster3.url, app)
    outbox = keys.outbox_key(app, "orders", 0, "tally")
    left = [Total("zed", n, 1000 + n) for n in range(1, 4)]
    async with system:
        client = system.client()
        ids = []
        for total in left:
            target = totals.stream_key(totals.partition_of(total))
            ids.append(await client.execute(
                "XADD", outbox, "*", TARGET_FIELD, target, *totals.format.encode(total)
            ))
        first_target = totals.stream_key(totals.partition_of(left[0]))
        await client.execute("XADD", first_target, "*", *totals.format.encode(left[0]))
        await client.execute("HSET", marks_key(first_target), "orders:0:tally",
                             f"0 {ids[0].decode()}")
        async with running(system):
            with trio.fail_after(20):
                while await outbox_lengths(client, app):
                    await trio.sleep(0.05)
        outputs = await read_totals(client, totals)
    assert sorted(t.orders for t in outputs) == [1, 2, 3]


async def test_wait_replicas_holds_the_outbox_until_a_real_replica_has_it() -> None:
    """``wait_replicas=1`` against a real replica: commits WAIT for it, and the outbox is
    forwarded only once it acknowledged the commits that wrote the entries. With the replica
    stopped (SIGSTOP: it acknowledges nothing), the outputs stay in the outbox and the wait is
    reported; resumed, they are forwarded, each once."""
    async with RedisCluster(primaries=1, replicas=1) as cluster:
        replica = cluster.replicas_of(cluster.primaries[0])[0]
        system, orders, totals, _counts = make(
            cluster.url, "eowait", wait_replicas=1, wait_timeout=0.05
        )
        sent = [Order(f"c{i % 3}", i) for i in range(18)]
        async with system:
            client = system.client()
            await orders.send_many(sent[:12])
            async with running(system) as worker:
                with trio.fail_after(30):
                    while len(await read_totals(client, totals)) < 12:
                        await trio.sleep(0.05)
                assert not [m for _t, kind, m in worker.events if kind == "wait-replicas"]
                replica.pause()
                try:
                    await orders.send_many(sent[12:])
                    with trio.fail_after(30):
                        while not any("forwarding waits" in m for _t, _k, m in worker.events):
                            await trio.sleep(0.05)
                    held = await outbox_lengths(client, "eowait")
                    forwarded = len(await read_totals(client, totals))
                finally:
                    replica.resume()
                with trio.fail_after(30):
                    while len(await read_totals(client, totals)) < len(sent):
                        await trio.sleep(0.05)
                notices = [m for _t, kind, m in worker.events if kind == "wait-replicas"]
            outputs = await read_totals(client, totals)
    assert held > 0 and forwarded < len(sent)
    assert any("a commit was acknowledged by 0 of 1 replicas" in m for m in notices), notices
    assert any("acknowledged by 0 of 1 replicas; forwarding waits" in m for m in notices)
    check_exact(outputs, sent)
