"""Dead letters against real Redis: poison events, the fenced idempotent move, OOM, replay, purge,
and the ``actorstream dlq`` command line."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
from redis import exceptions as rex

from actorstream import (
    DeadLetter,
    FencedError,
    LeaseTiming,
    Record,
    RestartPolicy,
    System,
    running,
)
from actorstream._core import keys as _keys
from actorstream._core.deadletter import GivenUp
from actorstream._core.errors import SelfFenced
from actorstream._core.fence import Fence
from actorstream._core.protocol import PartitionProtocol
from actorstream._transport import Client
from actorstream._tree import scripts as _scripts
from actorstream._tree.deadletters import Poison
from actorstream.dlq import (
    REPLAY,
    DeadLetterSource,
    Selection,
    count_dead_letters,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
    show_dead_letter,
)
from actorstream.testing import RedisServer

FAST_LEASES = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)
FAST_RESTARTS = RestartPolicy(max_restarts=50, within=60.0, backoff_initial=0.02, backoff_max=0.2)


class Order(Record):
    order_id: int
    amount: int


def make_system(url: str, name: str = "shop", **kw: Any) -> System:
    kw.setdefault("lease_timing", FAST_LEASES)
    kw.setdefault("restart_policy", FAST_RESTARTS)
    return System(name, url, install_signal_handlers=False, **kw)


async def wait_until(predicate: Any, timeout: float = 20.0, poll: float = 0.01) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(poll)


async def dlq_entries(client: Client, app: str, stream: str, partition: int) -> list[DeadLetter]:
    raw = await client.execute("XRANGE", _keys.dlq_key(app, stream, partition), "-", "+")
    return [DeadLetter.parse(i, flat) for i, flat in raw]


# -- poison events through the runtime ---------------------------------------------------------


async def _settled(client: Client, stream_key: str, group: str, dlq_key: str) -> bool:
    """Nothing pending, something dead-lettered, and the group has read the whole stream."""
    try:
        pending = await client.execute("XPENDING", stream_key, group)
    except rex.ResponseError as exc:
        if "NOGROUP" in str(exc):
            return False  # the partition actor has not created its group yet
        raise
    if pending[0] != 0 or await client.execute("XLEN", dlq_key) == 0:
        return False
    tail = await client.execute("XREVRANGE", stream_key, "+", "-", "COUNT", 1)
    for info in await client.execute("XINFO", "GROUPS", stream_key):
        fields = dict(zip(info[::2], info[1::2], strict=True))
        if fields[b"name"] == group.encode():
            return bool(fields[b"last-delivered-id"] == tail[0][0])
    return False


async def test_always_raising_handler_leaves_exactly_one_dead_letter(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)  # one partition: every key shares it
    calls: list[tuple[int, int]] = []

    @system.actor(orders, max_deliveries=3)
    async def bill(order: Order) -> None:
        calls.append((order.order_id, order.amount))
        if order.amount == 666:
            raise RuntimeError("poison order")

    events = [
        Order(order_id=1, amount=0),
        Order(order_id=2, amount=0),
        Order(order_id=9, amount=666),  # poison
        Order(order_id=1, amount=1),
        Order(order_id=2, amount=1),
        Order(order_id=1, amount=2),
    ]
    async with system:
        ids = await orders.send_many(events)
    poison_id = ids[2]
    async with Client.from_url(redis_url) as client:
        async with running(system) as runtime:

            async def settled() -> bool:
                return await _settled(
                    client, orders.stream_key(0), "bill", _keys.dlq_key("shop", "orders", 0)
                )

            await wait_until(settled)
            await trio.sleep(0.3)
            (part,) = runtime.statistics().partitions
        (dl,) = await dlq_entries(client, "shop", "orders", 0)
        pending = await client.execute("XPENDING", orders.stream_key(0), "bill")
        index = await client.execute("HGETALL", _keys.dlq_index_key("shop", "orders", 0))
        (original,) = await client.execute("XRANGE", orders.stream_key(0), poison_id, poison_id)
    # Every other event handled exactly once, each key in order.
    good = [c for c in calls if c[1] != 666]
    assert good == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)]
    # The poison event reached the handler max_deliveries times, then was dead-lettered once.
    assert calls.count((9, 666)) == 3
    assert dl.original_id == poison_id
    assert dl.kind == "max_deliveries"
    assert dl.actor == "bill" and dl.stream == "orders" and dl.partition == 0
    assert dl.deliveries == 3  # dead-lettered when its 3rd delivery failed
    assert "poison order" in dl.trace
    assert dl.worker == runtime.worker_id
    assert dl.epoch == part.epoch
    assert list(dl.fields) == list(zip(original[1][::2], original[1][1::2], strict=True))
    assert index == [f"bill {poison_id}".encode(), dl.dlq_id.encode()]
    assert pending[0] == 0
    assert part.state == "running"
    assert part.dead_lettered == 1
    assert part.processed == 5
    assert part.last_dead_letter is not None and "max_deliveries" in part.last_dead_letter


async def test_each_kind_of_undecodable_payload_is_dead_lettered(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order, max_payload_bytes=64)
    batched = system.stream("batched", record=Order, max_payload_bytes=64)
    good: list[int] = []
    good_batched: list[int] = []

    @system.actor(orders)
    async def bill(order: Order) -> None:
        good.append(order.amount)

    @system.actor(batched, batch=True)
    async def bill_many(batch: list[Order]) -> None:
        good_batched.extend(o.amount for o in batch)

    poison: list[tuple[list[bytes], str]] = [
        ([b"f", b"json", b"d", b"{not json"], "decode:json"),
        ([b"f", b"json", b"d", b'{"order_id": "x", "amount": 1}'], "decode:schema"),
        ([b"f", b"json", b"d", b'{"order_id": 1}'], "decode:schema"),  # missing field
        ([b"f", b"json", b"d", b"\xff\xfe\x00bytes"], "decode:utf8"),
        (
            [b"f", b"json", b"d", b'{"order_id": 1, "amount": 2, "pad": "' + b"x" * 80 + b'"}'],
            "decode:oversize",
        ),
        ([b"f", b"json+zlib", b"d", b"not zlib at all"], "decode:compression"),
        ([b"unrelated", b"field"], "decode:format"),
    ]
    async with Client.from_url(redis_url) as client:
        for stream in (orders, batched):
            key = stream.stream_key(0)
            async with system:
                await stream.send(Order(order_id=1, amount=1))
            for fields, _kind in poison:
                await client.execute("XADD", key, "*", *fields)
            async with system:
                await stream.send(Order(order_id=1, amount=2))
        async with running(system) as runtime:

            async def all_good() -> bool:
                return len(good) == 2 and len(good_batched) == 2

            await wait_until(all_good)
            await trio.sleep(0.2)
            parts = {p.actor: p for p in runtime.statistics().partitions}
        for stream_name, actor in (("orders", "bill"), ("batched", "bill_many")):
            letters = await dlq_entries(client, "shop", stream_name, 0)
            assert [dl.kind for dl in letters] == [kind for _f, kind in poison], stream_name
            for dl, (fields, _kind) in zip(letters, poison, strict=True):
                assert dl.original_flat() == fields  # the payload bytes, untouched
                assert dl.actor == actor
                assert dl.error
            pending = await client.execute(
                "XPENDING", _keys.stream_key("shop", stream_name, 0), actor
            )
            assert pending[0] == 0
            part = parts[actor]
            assert part.state == "running"
            assert part.restarts == 0
            assert part.dead_lettered == len(poison)
    assert good == [1, 2]
    assert good_batched == [1, 2]


# -- the move script itself: idempotent and fenced ---------------------------------------------


async def _pending_entry(client: Client, app: str = "shop") -> tuple[str, str, str, bytes]:
    """A stream with group 'bill', one entry read into its pending list, epoch 7."""
    stream = _keys.stream_key(app, "orders", 0)
    epoch = _keys.epoch_key(app, "orders", 0, "bill")
    await client.execute("XGROUP", "CREATE", stream, "bill", "0", "MKSTREAM")
    entry_id: bytes = await client.execute("XADD", stream, "*", "f", "json", "d", b"{bad")
    await client.execute("XREADGROUP", "GROUP", "bill", "w1", "STREAMS", stream, ">")
    await client.execute("SET", epoch, "7")
    return stream, epoch, _keys.dlq_key(app, "orders", 0), entry_id


def _move_args(entry_id: bytes, epoch: str = "7") -> list[Any]:
    return [
        "bill",
        epoch,
        entry_id,
        0,
        "stream",
        "orders",
        "partition",
        0,
        "id",
        entry_id,
        "actor",
        "bill",
        "kind",
        "decode:json",
        "error",
        "bad",
        "o.f",
        "json",
        "o.d",
        b"{bad",
    ]


async def test_a_retried_move_never_makes_a_second_entry(redis_url: str) -> None:
    async with Client.from_url(redis_url) as client:
        stream, epoch, dlq, entry_id = await _pending_entry(client)
        index = _keys.dlq_index_key("shop", "orders", 0)
        keys = [stream, epoch, dlq, index]
        first = await client.evalsha(_scripts.DEADLETTER, keys, _move_args(entry_id))
        # The reply was lost (connection died): the actor retries the same move.
        second = await client.evalsha(_scripts.DEADLETTER, keys, _move_args(entry_id))
        assert first == second
        assert await client.execute("XLEN", dlq) == 1
        assert (await client.execute("XPENDING", stream, "bill"))[0] == 0

        # A crash between "write" and "ack" (e.g. the write reached a replica that was promoted
        # without the ack): the entry and its index exist, the source is still pending.
        other: bytes = await client.execute("XADD", stream, "*", "f", "json", "d", b"{bad")
        await client.execute("XREADGROUP", "GROUP", "bill", "w1", "STREAMS", stream, ">")
        written = await client.execute("XADD", dlq, "*", "id", other, "actor", "bill")
        await client.execute("HSET", index, b"bill " + other, written)
        again = await client.evalsha(_scripts.DEADLETTER, keys, _move_args(other))
        assert again == written
        assert await client.execute("XLEN", dlq) == 2
        assert (await client.execute("XPENDING", stream, "bill"))[0] == 0


async def test_a_zombie_move_is_fenced_and_writes_nothing(redis_url: str) -> None:
    async with Client.from_url(redis_url) as client:
        stream, epoch, dlq, entry_id = await _pending_entry(client)
        index = _keys.dlq_index_key("shop", "orders", 0)
        await client.execute("INCR", epoch)  # a new owner took the partition: epoch 8
        with pytest.raises(FencedError):
            await client.evalsha(
                _scripts.DEADLETTER, [stream, epoch, dlq, index], _move_args(entry_id, "7")
            )
        assert await client.execute("EXISTS", dlq, index) == 0
        pending = await client.execute("XPENDING", stream, "bill")
        assert pending[0] == 1  # still pending, for the new owner to handle


# -- the dead-letter actor: moves over its mailbox, fenced, idempotent; retention --------------


def _poison(entry_id: bytes, epoch: int, *, deadline: float = float("inf")) -> Poison:
    protocol = PartitionProtocol(
        app="shop", stream="orders", partition=0, group="bill", consumer="w1", epoch=epoch
    )
    return Poison(
        protocol, Fence(epoch, deadline),
        GivenUp(entry_id, [b"f", b"json", b"d", b"{bad"], "decode:json", "bad", None, 1),
    )


async def test_the_actor_moves_fenced_and_idempotently_and_answers_each_caller(
    redis_url: str,
) -> None:
    system = make_system(redis_url)
    # The worker consumes another stream; the test plays the partition actor of "orders".

    @system.actor(system.stream("other", record=Order))
    async def noop(order: Order) -> None:
        pass

    async with Client.from_url(redis_url) as client:
        stream, _epoch, dlq, entry_id = await _pending_entry(client)
        index = _keys.dlq_index_key("shop", "orders", 0)
        async with running(system) as worker:
            moves = worker.dead_letters
            # A zombie (epoch 6 while Redis holds 7): FENCED, nothing written or acked.
            with pytest.raises(FencedError):
                await moves.move(_poison(entry_id, 6))
            assert await client.execute("EXISTS", dlq, index) == 0
            # Past our own lease deadline: refused before Redis is asked.
            with pytest.raises(SelfFenced):
                await moves.move(_poison(entry_id, 7, deadline=trio.current_time() - 1))
            # Concurrent callers each get their answer; the retried move is the same entry.
            answers: list[bytes] = []

            async def move() -> None:
                answers.append(await moves.move(_poison(entry_id, 7)))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(move)
            assert moves.moved == 3
        assert len(set(answers)) == 1
        assert await client.execute("XLEN", dlq) == 1
        assert (await client.execute("XPENDING", stream, "bill"))[0] == 0
        assert await client.execute("HGET", index, b"bill " + entry_id) == answers[0]


async def _index_consistent(client: Client, dlq: str, index: str) -> bool:
    ids = {i for i, _f in await client.execute("XRANGE", dlq, "-", "+")}
    flat = await client.execute("HGETALL", index)
    return set(flat[1::2]) == ids and len(flat) // 2 == len(ids)


async def test_dead_letter_maxlen_trims_old_dead_letters_with_their_index_entries(
    redis_url: str,
) -> None:
    system = make_system(redis_url, dead_letter_maxlen=3)
    orders = system.stream("orders", record=Order)

    @system.actor(orders)
    async def bill(order: Order) -> None:
        pass

    dlq = _keys.dlq_key("shop", "orders", 0)
    index = _keys.dlq_index_key("shop", "orders", 0)
    async with Client.from_url(redis_url) as client:
        bad = [
            await client.execute("XADD", orders.stream_key(0), "*", "f", "json", "d", b"{%d" % i)
            for i in range(10)
        ]
        async with running(system) as worker:

            async def settled() -> bool:
                return worker.dead_letters.moved == 10 and await client.execute(
                    "HLEN", index
                ) == 3

            await wait_until(settled)
        letters = await dlq_entries(client, "shop", "orders", 0)
        assert [dl.original_id.encode() for dl in letters] == bad[-3:]  # the newest kept
        assert await _index_consistent(client, dlq, index)
        assert (await client.execute("XPENDING", orders.stream_key(0), "bill"))[0] == 0


async def test_the_actor_sweeps_index_entries_left_behind_by_trimming(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order, partitions=2, key="order_id")

    @system.actor(orders)
    async def bill(order: Order) -> None:
        pass

    async with Client.from_url(redis_url) as client:
        # What 0.1's MAXLEN ~ left behind: index entries whose dead letter was trimmed away.
        for p in range(2):
            dlq = _keys.dlq_key("shop", "orders", p)
            index = _keys.dlq_index_key("shop", "orders", p)
            for i in range(700):  # more than one sweep step
                gone = await client.execute("XADD", dlq, "*", "id", f"2-{i}", "actor", "bill")
                await client.execute("HSET", index, f"bill 2-{i}", gone)
            kept = await client.execute("XADD", dlq, "*", "id", "1-1", "actor", "bill")
            await client.execute("HSET", index, "bill 1-1", kept)
            await client.execute("XTRIM", dlq, "MAXLEN", 1)
        async with running(system) as worker:

            async def swept() -> bool:
                return worker.dead_letters.swept == 1400

            await wait_until(swept)
        for p in range(2):
            index = _keys.dlq_index_key("shop", "orders", p)
            assert await client.execute("HKEYS", index) == [b"bill 1-1"]
            assert await _index_consistent(client, _keys.dlq_key("shop", "orders", p), index)


# -- a dead-letter write that fails: OOM under maxmemory ---------------------------------------

OOM_LEASES = LeaseTiming(
    ttl=15.0, renew_interval=3.0, heartbeat_interval=1.0, member_timeout=30.0, self_fence_margin=1.0
)


async def _memory(client: Client) -> dict[str, str]:
    info = (await client.execute("INFO", "memory")).decode()
    return dict(line.split(":", 1) for line in info.splitlines() if ":" in line)


async def _fill_memory(client: Client) -> int:
    """Write 256 KiB values until Redis refuses them; returns how many were written.

    A refused write leaves used_memory just under the line (its query buffer is freed), where a
    small dead-letter entry would still fit; so maxmemory is then lowered 1 MiB below what is
    used, and every denyoom command fails until the fillers are deleted.
    """
    chunk = b"x" * (256 * 1024)
    for n in range(1000):
        try:
            await client.execute("SET", f"filler:{n}", chunk)
        except rex.OutOfMemoryError:
            break
    else:
        raise AssertionError("maxmemory was never reached")
    used = int((await _memory(client))["used_memory"])
    await client.execute("CONFIG", "SET", "maxmemory", used - 1024 * 1024)
    with pytest.raises(rex.OutOfMemoryError):
        await client.execute("SET", "probe", "1")
    return n


async def _free_memory(client: Client, n: int) -> None:
    await client.execute("DEL", *[f"filler:{i}" for i in range(n)])
    assert await client.execute("SET", "probe", "1") == b"OK"


async def _oom_scenario(
    server: RedisServer, *, max_deliveries: int, hold: float
) -> tuple[list[DeadLetter], Any, list[int]]:
    system = make_system(server.url, lease_timing=OOM_LEASES)
    orders = system.stream("orders", record=Order)
    gate = trio.Event()
    entered = trio.Event()
    handled: list[int] = []

    @system.actor(orders, max_deliveries=max_deliveries)
    async def bill(order: Order) -> None:
        if order.amount == 1:
            entered.set()
            await gate.wait()
        handled.append(order.amount)

    key = orders.stream_key(0)
    async with Client.from_url(server.url) as client:
        async with system:
            await orders.send(Order(order_id=1, amount=1))
            poison = await client.execute("XADD", key, "*", "f", "json", "d", b"{not json")
            after = await orders.send(Order(order_id=1, amount=2))
        async with running(system) as runtime:
            # All three were read in one batch; the handler holds the first while Redis fills
            # up, so the dead-letter write of the poison is the first write refused.
            # (Under maxmemory no new entries are read at all: XREADGROUP is refused too.)
            with trio.fail_after(20):
                await entered.wait()
            fillers = await _fill_memory(client)
            gate.set()

            async def waiting_redis() -> bool:
                (part,) = runtime.statistics().partitions
                return part.state == "waiting-redis"

            await wait_until(waiting_redis)
            (part,) = runtime.statistics().partitions
            assert part.last_error is not None and "OutOfMemoryError" in part.last_error
            assert "OOM" in part.last_error
            assert await client.execute("XLEN", _keys.dlq_key("shop", "orders", 0)) == 0
            pending = await client.execute("XPENDING", key, "bill", "-", "+", 10)
            # Still pending (with the event read after it), nothing acked, nothing lost.
            assert {poison, after.encode()} <= {p[0] for p in pending}

            await trio.sleep(hold)  # the actor retries with backoff meanwhile
            assert await client.execute("XLEN", _keys.dlq_key("shop", "orders", 0)) == 0
            await _free_memory(client, fillers)

            async def moved() -> bool:
                return await _settled(client, key, "bill", _keys.dlq_key("shop", "orders", 0))

            await wait_until(moved, timeout=30)
            await trio.sleep(0.3)
            (part,) = runtime.statistics().partitions
            assert part.state == "running"
            assert part.dead_lettered == 1
        letters = await dlq_entries(client, "shop", "orders", 0)
        assert (await client.execute("XPENDING", key, "bill"))[0] == 0
    assert all(dl.original_id == poison.decode() for dl in letters)
    return letters, part, handled


async def test_dead_letter_write_failing_under_maxmemory_keeps_the_event_pending() -> None:
    async with RedisServer(maxmemory="16mb", maxmemory_policy="noeviction") as server:
        letters, part, handled = await _oom_scenario(server, max_deliveries=3, hold=2.0)
    assert len(letters) == 1  # dead-lettered exactly once, after the memory was freed
    assert letters[0].kind == "decode:json"
    assert handled == [1, 2]
    assert part.restarts == 0


# -- operator API: list, show, counts, replay, purge ------------------------------------------


async def _dead_letter_some(
    redis_url: str, broken: set[int], n: int = 12, partitions: int = 4
) -> tuple[System, list[tuple[int, int]], list[str]]:
    """An app whose handler fails for order ids in ``broken``; returns after all were either
    handled or dead-lettered. ``handled`` keeps growing when the system runs again."""
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order, partitions=partitions, key="order_id")
    handled: list[tuple[int, int]] = []

    # RuntimeError is named poison: two broken keys may follow each other in a partition, and
    # a run of failures with nothing succeeding elsewhere would otherwise wait as an outage.
    @system.actor(orders, max_deliveries=1, batch_size=1, poison_errors=(RuntimeError,))
    async def bill(order: Order) -> None:
        if order.order_id in broken:
            raise RuntimeError(f"order {order.order_id} is broken")
        handled.append((order.order_id, order.amount))

    async with system:
        ids = await orders.send_many(Order(order_id=i % 6, amount=i) for i in range(n))
    bad = sum(1 for i in range(n) if i % 6 in broken)
    async with running(system), Client.from_url(redis_url) as client:

        async def settled() -> bool:
            total = 0
            for p in range(partitions):
                total += await client.execute("XLEN", _keys.dlq_key("shop", "orders", p))
            return total == bad and len(handled) == n - bad

        await wait_until(settled)
    return system, handled, ids


async def test_list_show_counts_and_replay_processes_the_events_again(redis_url: str) -> None:
    broken = {1, 4}
    system, handled, ids = await _dead_letter_some(redis_url, broken)
    orders = system.streams["orders"]
    async with Client.from_url(redis_url) as client:
        letters = await list_dead_letters(system, client=client)
        assert len(letters) == 4
        # Entry ids are per stream key: two partitions can hold the same id, so compare
        # (partition, id) pairs.
        expected = {
            (orders.partition_of(Order(order_id=i % 6, amount=i)), ids[i]) for i in (1, 4, 7, 10)
        }
        assert {(dl.partition, dl.original_id) for dl in letters} == expected
        for dl in letters:
            assert dl.kind == "poison_error"
            assert "is broken" in dl.trace
        # Filters.
        assert await list_dead_letters(system, Selection(kind="decode"), client=client) == []
        async def count(selection: Selection, limit: int | None = None) -> int:
            return len(await list_dead_letters(system, selection, client=client, limit=limit))

        assert await count(Selection(kind="poison_error")) == 4
        assert await count(Selection(actor="bill"), limit=3) == 3
        assert await count(Selection(error="order 1 is")) == 2
        # Time filters select by dead-letter id: the server's time of the move.
        newest = max(int(dl.dlq_id.split("-")[0]) for dl in letters)
        assert await count(Selection(since_ms=newest + 1)) == 0
        assert await count(Selection(until_ms=newest)) == 4
        # Show, by dead-letter id and by original id.
        first = letters[0]
        assert await show_dead_letter(system, first.dlq_id, client=client) == [first]
        assert await show_dead_letter(system, first.original_id, client=client) == [first]
        counts = await count_dead_letters(system, client=client)
        assert sum(c.count for c in counts) == 4
        assert {c.kind for c in counts} == {"poison_error"}
        # Also without the System: an app name and its streams.
        source = DeadLetterSource("shop", {"orders": 4})
        assert await list_dead_letters(source, client=client) == letters

        dry = await replay_dead_letters(system, client=client, dry_run=True)
        assert [dl for dl, _ in dry.replayed] == letters
        assert len(await list_dead_letters(system, client=client)) == 4  # dry run: untouched

        broken.clear()  # the bug is fixed: replay
        report = await replay_dead_letters(system, client=client)
        assert len(report.replayed) == 4 and not report.skipped
        for dl, new_id in report.replayed:
            assert new_id is not None
            (entry,) = await client.execute(
                "XRANGE", orders.stream_key(dl.partition), new_id, new_id
            )
            assert list(zip(entry[1][::2], entry[1][1::2], strict=True)) == list(dl.fields)
        assert await list_dead_letters(system, client=client) == []
        for p in range(4):
            assert await client.execute("HLEN", _keys.dlq_index_key("shop", "orders", p)) == 0
        # Replaying again finds nothing; replaying a replayed id directly is a no-op.
        again = await replay_dead_letters(system, client=client)
        assert again.replayed == () and again.skipped == ()
        dl = letters[0]
        keys = [
            _keys.dlq_key("shop", "orders", dl.partition),
            _keys.dlq_index_key("shop", "orders", dl.partition),
            orders.stream_key(dl.partition),
        ]
        assert await client.evalsha(REPLAY, keys, [dl.dlq_id]) == [0]

        async with running(system) as runtime:

            async def all_handled() -> bool:
                return len(handled) == 12

            await wait_until(all_handled)
            await trio.sleep(0.2)
            stats = runtime.statistics()
        assert sorted(handled) == sorted((i % 6, i) for i in range(12))
        assert len(set(handled)) == 12  # nothing twice
        assert sum(p.processed for p in stats.partitions) == 4
        assert sum(p.dead_lettered for p in stats.partitions) == 0
        for p in range(4):
            pending = await client.execute("XPENDING", orders.stream_key(p), "bill")
            assert pending[0] == 0


async def test_purge_by_filter_then_everything(redis_url: str) -> None:
    system, _handled, _ids = await _dead_letter_some(redis_url, {1, 4})
    async with Client.from_url(redis_url) as client:
        letters = await list_dead_letters(system, client=client)
        assert len(letters) == 4
        dry = await purge_dead_letters(
            system, Selection(error="order 1 is"), client=client, dry_run=True
        )
        assert dry.purged == 2
        assert len(await list_dead_letters(system, client=client)) == 4
        report = await purge_dead_letters(system, Selection(error="order 1 is"), client=client)
        assert report.purged == 2
        rest = await list_dead_letters(system, client=client)
        assert len(rest) == 2 and all("order 4" in dl.trace for dl in rest)
        purged_ids = {dl.original_id for dl in letters} - {dl.original_id for dl in rest}
        for dl in letters:
            idx = await client.execute(
                "HGET",
                _keys.dlq_index_key("shop", "orders", dl.partition),
                f"bill {dl.original_id}",
            )
            assert (idx is None) == (dl.original_id in purged_ids)
        report = await purge_dead_letters(system, Selection(ids=[rest[0].dlq_id]), client=client)
        assert report.purged == 1
        report = await purge_dead_letters(system, client=client)
        assert report.purged == 1
        assert await list_dead_letters(system, client=client) == []
        for p in range(4):
            assert (
                await client.execute(
                    "EXISTS",
                    _keys.dlq_key("shop", "orders", p),
                    _keys.dlq_index_key("shop", "orders", p),
                )
                == 0
            )


# -- the command line ----------------------------------------------------------------------------

APP = """
from actorstream import Record, System

system = System("shop")

class Order(Record):
    order_id: int
    amount: int

orders = system.stream("orders", record=Order, partitions=4, key="order_id")

@system.actor(orders, max_deliveries=1)
async def bill(order: Order) -> None:
    pass
"""


async def _cli(*args: str, url: str, cwd: Path, stdin: bytes = b"") -> tuple[int, str, str]:
    env = {**os.environ, "ACTORSTREAM_REDIS_URL": url}
    proc = await trio.run_process(
        [sys.executable, "-m", "actorstream", "dlq", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=cwd,
        env=env,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def test_cli_list_show_replay_purge(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "shopapp.py").write_text(textwrap.dedent(APP))
    _system, _handled, _ids = await _dead_letter_some(redis_url, {1, 4})
    target = "shopapp:system"

    code, out, err = await _cli("list", target, "--json", url=redis_url, cwd=tmp_path)
    assert code == 0, err
    listed = json.loads(out)
    assert len(listed) == 4
    assert {d["kind"] for d in listed} == {"poison_error"}
    assert listed[0]["fields"][0] == {"name": "f", "value": "json"}

    code, out, err = await _cli("list", target, url=redis_url, cwd=tmp_path)
    assert code == 0 and len(out.splitlines()) == 4 and "4 dead letter(s)" in err

    code, out, err = await _cli(
        "list",
        "shopapp:orders",
        "--partition",
        str(listed[0]["partition"]),
        "--json",
        url=redis_url,
        cwd=tmp_path,
    )
    assert code == 0, err
    assert {d["partition"] for d in json.loads(out)} == {listed[0]["partition"]}

    code, out, err = await _cli("show", target, listed[0]["dlq_id"], url=redis_url, cwd=tmp_path)
    assert code == 0, err
    assert listed[0]["original_id"] in out and "is broken" in out

    code, out, err = await _cli("show", target, "1-1", url=redis_url, cwd=tmp_path)
    assert code == 1 and "no dead letter 1-1" in err

    code, out, err = await _cli("counts", target, "--json", url=redis_url, cwd=tmp_path)
    assert code == 0 and sum(c["count"] for c in json.loads(out)) == 4

    code, out, err = await _cli(
        "replay", target, "--dry-run", "--json", url=redis_url, cwd=tmp_path
    )
    assert code == 0, err
    dry = json.loads(out)
    assert dry["dry_run"] and len(dry["replayed"]) == 4
    assert all(r["new_id"] is None for r in dry["replayed"])

    code, out, err = await _cli(
        "replay", target, "--id", listed[0]["dlq_id"], "--json", url=redis_url, cwd=tmp_path
    )
    assert code == 0, err
    (replayed,) = json.loads(out)["replayed"]
    assert replayed["dlq_id"] == listed[0]["dlq_id"] and replayed["new_id"]

    code, out, err = await _cli(
        "purge", target, "--kind", "poison_error", url=redis_url, cwd=tmp_path, stdin=b"y\n"
    )
    assert code == 0 and "purged 3" in err
    code, out, err = await _cli("purge", target, "--yes", "--json", url=redis_url, cwd=tmp_path)
    assert code == 0 and json.loads(out)["purged"] == 0


async def test_cli_purge_asks_and_bad_input_is_one_line(redis_server: RedisServer,
                                                        tmp_path: Path) -> None:
    """What does not depend on how Redis is laid out (one Redis only): the purge prompt and
    the one-line errors of bad input."""
    (tmp_path / "shopapp.py").write_text(textwrap.dedent(APP))
    redis_url = redis_server.url
    await _dead_letter_some(redis_url, {1})
    target = "shopapp:system"

    # Purge asks first; "n" (or no answer) purges nothing.
    code, _out, err = await _cli("purge", target, url=redis_url, cwd=tmp_path, stdin=b"n\n")
    assert code == 1 and "purge 2 dead letter(s)" in err and "nothing purged" in err
    code, _out, err = await _cli("purge", target, url=redis_url, cwd=tmp_path)
    assert code == 1 and "nothing purged" in err

    # Bad input: one clear line, exit 2.
    for args, message in [
        (("list", target, "--stream", "nope"), "unknown stream 'nope' in app 'shop'"),
        (("list", "shopapp:nosuch"), "has no attribute 'nosuch'"),
        (("list", "nomodule:system"), "cannot import module 'nomodule'"),
        (("list", target, "--actor", "nobody"), "unknown actor 'nobody'"),
        (("list", target, "--since", "yesterday"), "--since 'yesterday'"),
        (("list", target, "--partition", "9"), "partitions 0..3, not 9"),
    ]:
        code, _out, err = await _cli(*args, url=redis_url, cwd=tmp_path)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and message in err, err
