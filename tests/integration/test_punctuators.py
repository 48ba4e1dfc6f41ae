"""Punctuators against real Redis: per-partition ticks in stream time and wall time, run by
the lease holder, committed (and fenced) with the partition's state.

The checks compare what the punctuators sent with a model computed from the inputs read back
in each partition's stream order; none counts calls.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import trio

from actorstream import LeaseTiming, Record, System, Tick, running
from actorstream._core.keys import epoch_key, punctuators_key
from actorstream.testing import RedisCluster

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)
EVERY = 10_000  # ms of event time
T0 = 1_800_000_000.0


class Sale(Record):
    customer: str
    amount: int
    ts: float


class Total(Record):
    partition: int
    tick: float
    previous: float
    amount: int


async def wait_for(pred: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not await pred():
            await trio.sleep(0.02)


def build(url: str, app: str, partitions: int = 2, outputs: int = 1) -> tuple[System, Any, Any]:
    """Sales summed per partition between stream-time ticks; each tick sends the sum and
    starts afresh (exactly-once: the sum, the reset and the send commit together)."""
    system = System(app, url, install_signal_handlers=False, lease_timing=FAST)
    sales = system.stream("sales", record=Sale, partitions=partitions, key="customer", time="ts")
    totals = system.stream("totals", record=Total, partitions=outputs, key="partition")
    acc = system.table("acc", value=int, default=0)

    @system.actor(sales, tables=[acc], processing="exactly_once")
    async def tally(sale: Sale) -> None:
        acc[sale.customer] += sale.amount

    @system.punctuate(tally, every=EVERY / 1000, time="stream")
    async def flush(tick: Tick) -> None:
        total = 0
        for key, value in list(acc.items()):
            total += value
            del acc[key]
        await totals.send(Total(tick.partition, tick.time, tick.previous, total))

    return system, sales, totals


def model(parts: list[list[Sale]]) -> list[tuple[int, float, float, int]]:
    """Per partition, in stream order: a tick fires before the first event whose time
    reaches the next multiple of EVERY after the last tick, with the sum since the last."""
    out = []
    for p, events in enumerate(parts):
        mark: int | None = None
        acc = 0
        for sale in events:
            t = round(sale.ts * 1000)
            floor = t // EVERY * EVERY
            if mark is None:
                mark = floor
            elif floor > mark:
                out.append((p, floor / 1000, mark / 1000, acc))
                acc, mark = 0, floor
            acc += sale.amount
    return sorted(out)


async def read_back(client: Any, stream: Any) -> list[list[Any]]:
    parts = []
    for p in range(stream.partitions):
        entries = await client.execute("XRANGE", stream.stream_key(p), "-", "+")
        parts.append([stream.format_decoder(flat) for _id, flat in entries])
    return parts


async def acked_all(client: Any, stream: Any, group: str, n: int) -> bool:
    pending = 0
    delivered = 0
    for p in range(stream.partitions):
        for g in await client.execute("XINFO", "GROUPS", stream.stream_key(p)):
            info = dict(zip(g[::2], g[1::2], strict=True))
            if info[b"name"] == group.encode():
                pending += info[b"pending"]
                delivered += info[b"entries-read"] or 0
    return pending == 0 and delivered >= n


async def test_stream_time_ticks_fire_once_each_across_a_partition_move(
    redis_server: Any,
) -> None:
    """Worker A handles the first half of the sales and stops; worker B (another System of
    the same app) takes the partitions over and handles the rest: every crossed tick is
    emitted once, with the exact sum since the tick before, none skipped at the move."""
    # out of order now and then, jumps over several ticks, equal times
    times = [1, 4, 12, 9, 19, 20, 21, 55, 30, 56, 70, 71, 69, 99, 100, 130, 131, 131, 170, 180]
    sales = [Sale(c, i + 1, T0 + t) for i, t in enumerate(times) for c in ("ann", "bob", "cy")]
    half = len(sales) // 2
    a, a_sales, totals = build(redis_server.url, "punct-move")
    async with a:
        client = a.client()
        await a_sales.send_many(sales[:half])
        async with running(a):
            await wait_for(lambda: acked_all(client, a_sales, "tally", half))
    b, b_sales, _ = build(redis_server.url, "punct-move")
    async with b:
        client = b.client()
        await b_sales.send_many(sales[half:])
        async with running(b):
            await wait_for(lambda: acked_all(client, b_sales, "tally", len(sales)))
            await trio.sleep(0.2)
        expected = model(await read_back(client, b_sales))
        got = sorted((t.partition, t.tick, t.previous, t.amount)
                     for part in await read_back(client, totals) for t in part)  # fmt: skip
        marks = [await client.execute("HGET", punctuators_key("punct-move", "sales", p, "tally"),
                                      "flush") for p in range(2)]  # fmt: skip
    assert len(expected) >= 8  # the run crossed ticks on both partitions, some at once
    assert got == expected
    last = {p: tick for p, tick, _prev, _amount in expected}
    assert marks == [str(round(last[p] * 1000)).encode() for p in range(2)]


class Beat(Record):
    partition: int
    time: float
    previous: float


async def test_wall_clock_ticks_fire_on_an_idle_partition(redis_server: Any) -> None:
    """No event at all: the wall-clock punctuator still ticks on each partition, its sends
    committed (exactly-once), each tick once and following the one before."""
    system = System("punct-wall", redis_server.url, install_signal_handlers=False,
                    lease_timing=FAST)  # fmt: skip
    sales = system.stream("sales", record=Sale, partitions=2, key="customer", time="ts")
    beats = system.stream("beats", record=Beat, partitions=1, key="partition")

    @system.actor(sales, processing="exactly_once")
    async def quiet(sale: Sale) -> None: ...

    @system.punctuate(quiet, every=0.2, time="wall")
    async def beat(tick: Tick) -> None:
        assert tick.clock == "wall"
        await beats.send(Beat(tick.partition, tick.time, tick.previous))

    async with system:
        client = system.client()

        async def enough() -> bool:
            found = [b.partition for part in await read_back(client, beats) for b in part]
            return all(found.count(p) >= 3 for p in range(2))

        async with running(system):
            await wait_for(enough)
        got = [b for part in await read_back(client, beats) for b in part]
    per: dict[int, list[Beat]] = defaultdict(list)
    for b in got:
        per[b.partition].append(b)
    for bs in per.values():
        bs.sort(key=lambda b: b.time)
        assert all(round(b.time * 1000) % 200 == 0 for b in bs)
        assert [b.previous for b in bs[1:]] == [b.time for b in bs[:-1]]  # no repeat, no gap


async def test_a_tick_committed_after_the_epoch_moved_is_fenced_whole(
    redis_server: Any,
) -> None:
    """Another owner took the partition (its epoch moved) while a tick ran: Redis refuses the
    commit, so neither the tick's table change, nor its send, nor its mark lands; the next
    owner runs the tick again, once."""
    system = System("punct-fence", redis_server.url, install_signal_handlers=False,
                    lease_timing=FAST)  # fmt: skip
    sales = system.stream("sales", record=Sale, partitions=1, key="customer", time="ts")
    out = system.stream("out", record=Total, partitions=1, key="partition")
    ticks = system.table("ticks", value=int, default=0)
    entered = trio.Event()
    release = trio.Event()
    calls = 0

    @system.actor(sales, tables=[ticks], processing="exactly_once")
    async def tally(sale: Sale) -> None: ...

    @system.punctuate(tally, every=10.0)
    async def flush(tick: Tick) -> None:
        nonlocal calls
        calls += 1
        ticks["ann"] += 1
        await out.send(Total(0, tick.time, tick.previous, ticks["ann"]))
        entered.set()
        await release.wait()

    async with system:
        client = system.client()
        await sales.send_many([Sale("ann", 1, T0 + 1), Sale("ann", 1, T0 + 11)])
        async with running(system) as worker:
            with trio.fail_after(15):
                await entered.wait()
            await client.execute("INCR", epoch_key("punct-fence", "sales", 0, "tally"))
            release.set()
            await wait_for(lambda: acked_all(client, sales, "tally", 2))
            await trio.sleep(0.3)
            errors = [p.last_error or "" for p in worker.statistics().partitions]
        assert calls == 2  # once fenced, once by the next owner
        assert await ticks.read("ann") == 1
        assert [(t.tick, t.previous, t.amount) for t in (await read_back(client, out))[0]] == [
            (T0 + 10, T0, 1)
        ]
        mark = await client.execute("HGET", punctuators_key("punct-fence", "sales", 0, "tally"),
                                    "flush")  # fmt: skip
        assert mark == str(round((T0 + 10) * 1000)).encode()
        assert any("FENCED" in e for e in errors), errors


async def test_a_failing_punctuator_backs_off_and_nothing_is_lost(redis_server: Any) -> None:
    """A tick that raises is contained like a handler failure: the partition backs off and
    retries it (the event it runs before stays pending, no delivery spent, nothing
    dead-lettered), the worker keeps running, and the tick is committed once it succeeds."""
    system, sales, totals = build(redis_server.url, "punct-fail", partitions=1)
    failures = 0
    flush = system.actors["tally"].punctuators[0]

    async def flaky(tick: Tick) -> None:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise RuntimeError("downstream unavailable")
        await flush.fn(tick)

    import attrs

    system.actors["tally"].punctuators = (attrs.evolve(flush, fn=flaky),)
    batch = [Sale("ann", 1, T0 + t) for t in (1, 5, 12, 13, 25)]
    async with system:
        client = system.client()
        await sales.send_many(batch)
        async with running(system) as worker:
            await wait_for(lambda: acked_all(client, sales, "tally", len(batch)))
            await trio.sleep(0.2)
            stats = worker.statistics().partitions
        got = sorted((t.partition, t.tick, t.previous, t.amount)
                     for part in await read_back(client, totals) for t in part)  # fmt: skip
        assert got == model(await read_back(client, sales))
    assert failures == 3
    assert sum(p.dead_lettered for p in stats) == 0
    assert sum(p.failed for p in stats) >= 3
    assert "downstream unavailable" in (stats[0].last_error or "")


async def test_a_windowed_actor_ticks_with_its_plain_tables(redis_server: Any) -> None:
    """A tick sees the actor's plain tables; a windowed table is addressed by an event's time,
    so a tick cannot address it by key (``TableError``, caught here)."""
    from actorstream import TableError, Tumbling

    system = System("punct-win", redis_server.url, install_signal_handlers=False,
                    lease_timing=FAST)  # fmt: skip
    sales = system.stream("sales", record=Sale, partitions=1, key="customer", time="ts")
    per_minute = system.table("per_minute", value=int, default=0, window=Tumbling(60.0))
    seen = system.table("seen", value=int, default=0)
    refused: list[str] = []

    @system.actor(sales, tables=[per_minute, seen])
    async def tally(sale: Sale) -> None:
        per_minute[sale.customer] += sale.amount
        seen[sale.customer] += 1

    @system.punctuate(tally, every=30.0)
    async def check(tick: Tick) -> None:
        try:
            per_minute["ann"]
        except TableError as exc:
            refused.append(str(exc))
        seen["ticks"] += 1

    async with system:
        client = system.client()
        await sales.send_many([Sale("ann", 1, T0 + t) for t in (1, 31, 95)])
        async with running(system) as worker:
            await wait_for(lambda: acked_all(client, sales, "tally", 3))
            assert [p.ticks for p in worker.statistics().partitions] == [2]
        assert await seen.read("ticks") == 2  # T0 + 30 and T0 + 90 (once for 60 and 90)
        assert await seen.read("ann") == 3
        assert await per_minute.read("ann") == {T0 + 60: 1}
    assert len(refused) == 2 and "addressed by the time of the event" in refused[0]


async def test_a_wall_clock_jump_is_one_call_and_a_step_back_waits(
    redis_server: Any, monkeypatch: Any
) -> None:
    """The wall clock jumps three ticks ahead: one call, covering them all; stepped back, no
    tick until it passes the last one again."""
    from actorstream._tree.punctuators import PartitionPunctuators

    now = [T0 + 0.5]
    monkeypatch.setattr(PartitionPunctuators, "wall_clock", staticmethod(lambda: now[0]))
    system = System("punct-jump", redis_server.url, install_signal_handlers=False,
                    lease_timing=FAST)  # fmt: skip
    sales = system.stream("sales", record=Sale, partitions=1, key="customer", time="ts")
    beats = system.stream("beats", record=Beat, partitions=1, key="partition")
    missed: list[int] = []

    @system.actor(sales, processing="exactly_once")
    async def quiet(sale: Sale) -> None: ...

    @system.punctuate(quiet, every=1.0, time="wall")
    async def beat(tick: Tick) -> None:
        missed.append(tick.missed)
        await beats.send(Beat(tick.partition, tick.time, tick.previous))

    async with system:
        client = system.client()
        key = punctuators_key("punct-jump", "sales", 0, "quiet")

        async def mark() -> bytes | None:
            found: bytes | None = await client.execute("HGET", key, "beat")
            return found

        async def sent() -> list[tuple[float, float]]:
            return [(b.time, b.previous) for b in (await read_back(client, beats))[0]]

        async with running(system):
            await wait_for(lambda: _equals(mark, str(round(T0 * 1000)).encode()))
            now[0] = T0 + 3.2
            await wait_for(lambda: _equals(sent, [(T0 + 3, T0)]))
            now[0] = T0 + 1.0  # stepped back
            await trio.sleep(0.3)
            assert await sent() == [(T0 + 3, T0)]
            now[0] = T0 + 4.0
            await wait_for(lambda: _equals(sent, [(T0 + 3, T0), (T0 + 4, T0 + 3)]))
    assert missed == [2, 0]


async def _equals(read: Any, value: Any) -> bool:
    return bool(await read() == value)


async def test_exactly_once_ticks_on_a_cluster_go_through_the_outbox(
    cluster_3: RedisCluster,
) -> None:
    """On a Redis Cluster, a tick's sends to other slots go through the partition's outbox
    like a handler's: each sum arrives once."""
    for node in cluster_3.primaries:
        node.call("FLUSHALL")
    system, sales, totals = build(cluster_3.url, "punct-cl", partitions=4, outputs=3)
    batch = [Sale(f"c{i % 9}", i, T0 + 3.7 * i) for i in range(60)]
    async with system:
        client = system.client()
        await sales.send_many(batch)
        async with running(system):
            await wait_for(lambda: acked_all(client, sales, "tally", len(batch)))
            expected = model(await read_back(client, sales))

            async def arrived() -> bool:
                got = [t for part in await read_back(client, totals) for t in part]
                return len(got) >= len(expected)

            await wait_for(arrived)
            await trio.sleep(0.3)
        got = sorted((t.partition, t.tick, t.previous, t.amount)
                     for part in await read_back(client, totals) for t in part)  # fmt: skip
    assert len(expected) > 10
    assert got == expected
