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


def build(url: str, app: str, partitions: int = 2) -> tuple[System, Any, Any]:
    """Sales summed per partition between stream-time ticks; each tick sends the sum and
    starts afresh (exactly-once: the sum, the reset and the send commit together)."""
    system = System(app, url, install_signal_handlers=False, lease_timing=FAST)
    sales = system.stream("sales", record=Sale, partitions=partitions, key="customer", time="ts")
    totals = system.stream("totals", record=Total, partitions=1, key="partition")
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
