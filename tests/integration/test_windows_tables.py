"""Windowed tables against real Redis: windows per key on event time, closed and emitted once."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actorstream import (
    ConfigError,
    Hopping,
    LeaseTiming,
    PerWindow,
    Record,
    Session,
    System,
    TableError,
    Tumbling,
    Window,
    running,
)

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Sale(Record):
    customer: str
    amount: int
    ts: float


class Click(Record):
    user: str
    t: int


class Revenue(Record):
    customer: str
    start: float
    end: float
    amount: int


async def wait_for(pred: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.02)


def processed(worker: Any) -> int:
    return sum(p.processed for p in worker.statistics().partitions)


async def test_tumbling_windows_close_once_and_late_events_are_not_counted(
    redis_server: Any,
) -> None:
    system = System("win", redis_server.url, install_signal_handlers=False, lease_timing=FAST)
    sales = system.stream("sales", record=Sale, partitions=2, key="customer", time="ts")
    revenue = system.stream("revenue", record=Revenue, partitions=1, key="customer")
    per_minute = system.table("per_minute", value=int, default=0, window=Tumbling(60, grace=5))
    emitted: list[Revenue] = []
    lates: list[tuple[Any, float, tuple[Window, ...]]] = []

    @system.actor(sales, tables=[per_minute], processing="exactly_once")
    async def tally(sale: Sale) -> None:
        per_minute[sale.customer] += sale.amount

    @per_minute.on_close
    async def emit(customer: str, window: Window, amount: int) -> None:
        await revenue.send(Revenue(customer, window.start, window.end, amount))

    @per_minute.on_late
    async def late(customer: str, event_time: float, windows: tuple[Window, ...]) -> None:
        lates.append((customer, event_time, windows))

    @system.actor(revenue)
    async def collect(r: Revenue) -> None:
        emitted.append(r)

    batch = [Sale(c, 1 + i, 10.0 * i) for i in range(12) for c in ("a", "b")]  # 0..110 s
    async with system:
        await sales.send_many(batch)
        async with running(system) as worker:
            await wait_for(lambda: processed(worker) >= 24)
            assert await per_minute.read("a") == {60.0: sum(range(7, 13))}  # [60, 120) open
            # stream time is 110 per partition: [0, 60) closed at 65
            await sales.send_many([Sale("a", 1000, 30.0), Sale("b", 1000, 59.0)])  # late
            await sales.send_many([Sale(c, 0, 125.0) for c in "ab"])  # closes [60, 120)
            await wait_for(lambda: len(emitted) >= 4 and len(lates) >= 2)
            await trio.sleep(0.3)
            stats = worker.statistics().partitions
            assert sum(p.late_events for p in stats if p.actor == "tally") == 2
    got = sorted((r.customer, r.start, r.end, r.amount) for r in emitted)
    assert got == [
        ("a", 0.0, 60.0, sum(range(1, 7))),
        ("a", 60.0, 120.0, sum(range(7, 13))),
        ("b", 0.0, 60.0, sum(range(1, 7))),
        ("b", 60.0, 120.0, sum(range(7, 13))),
    ]
    assert sorted((c, t) for c, t, _ in lates) == [("a", 30.0), ("b", 59.0)]
    assert all(w == (Window(0, 60_000),) for _, _, w in lates)
    async with system:
        assert await per_minute.snapshot() == {"a": {120.0: 0}, "b": {120.0: 0}}


async def test_sessions_merge_and_hopping_updates_each_window(redis_url: str) -> None:
    system = System("win2", redis_url, install_signal_handlers=False, lease_timing=FAST)
    clicks = system.stream("clicks", record=Click, partitions=1, key="user", time="t")
    sessions = system.table("sessions", value=int, default=0, window=Session(10, grace=100))
    sliding = system.table("sliding", value=int, default=0, window=Hopping(20, 10))
    closed: list[tuple[str, float, float, int]] = []

    @system.actor(clicks, tables=[sessions, sliding])
    async def count(click: Click) -> None:
        sessions[click.user] += 1
        assert isinstance(sliding[click.user], PerWindow)
        sliding[click.user] += 1

    @sessions.on_close
    async def ended(user: str, window: Window, n: int) -> None:
        closed.append((user, window.start, window.end, n))

    async with system:
        # sessions [0, 13) and [30, 43); 16 starts [16, 26); 24 bridges it to [30, 43)
        for t in (0, 3, 30, 33, 16, 24):
            await clicks.send(Click("u", t))
        async with running(system) as worker:
            await wait_for(lambda: processed(worker) >= 6)
            assert await sessions.read("u") == {0.0: 2, 16.0: 4}
            # hopping: 16 falls in [0, 20) and [10, 30), both closed by then (late); 24 is
            # late for [10, 30) but counts in [20, 40)
            assert await sliding.read("u") == {20.0: 3, 30.0: 2}
            assert sum(p.late_events for p in worker.statistics().partitions) == 2
            await clicks.send(Click("v", 200))
            await wait_for(lambda: len(closed) >= 2)
    assert sorted(closed) == [("u", 0.0, 13.0, 2), ("u", 16.0, 43.0, 4)]


async def test_an_idle_partition_closes_its_last_windows_by_the_wall_clock(
    redis_url: str,
) -> None:
    system = System("win3", redis_url, install_signal_handlers=False, lease_timing=FAST)
    sales = system.stream("sales", record=Sale, partitions=1, key="customer", time="ts")
    per_second = system.table(
        "per_second", value=int, default=0, window=Tumbling(1, grace=0.5), idle=0.3
    )
    closed: list[tuple[str, float, int]] = []

    @system.actor(sales, tables=[per_second])
    async def tally(sale: Sale) -> None:
        per_second[sale.customer] += sale.amount

    @per_second.on_close
    async def emit(customer: str, window: Window, amount: int) -> None:
        closed.append((customer, window.start, amount))

    async with system:
        await sales.send_many([Sale("a", 2, 100.2), Sale("a", 3, 100.9)])
        async with running(system):
            # no event moves stream time past 101.5: after 0.3 s of quiet the wall clock does
            await wait_for(lambda: bool(closed))
            with trio.fail_after(20):  # committed with the next read round trip
                while await per_second.read("a"):
                    await trio.sleep(0.1)
    assert closed == [("a", 100.0, 5)]


def test_windowed_declarations_are_checked() -> None:
    system = System("wincfg", "redis://127.0.0.1:1/0")
    sales = system.stream("sales", record=Sale, partitions=2, key="customer", time="ts")
    with pytest.raises(ConfigError, match="window must be Tumbling"):
        system.table("t1", value=int, window=60)
    with pytest.raises(ConfigError, match="idle must be > 0 seconds"):
        system.table("t0", value=int, window=Tumbling(60), idle=0)
    with pytest.raises(ConfigError, match="needs merge="):
        system.table("t2", value=str, window=Session(30))
    with pytest.raises(ConfigError, match="idle= apply to windowed tables"):
        system.table("t3", value=int, retention=5)
    per_minute = system.table("t4", value=int, default=0, window=Tumbling(60))
    with pytest.raises(ConfigError, match="need the event form"):
        system.actor(sales, tables=[per_minute], batch=True)(noop)
    with pytest.raises(ConfigError, match=r"actor 'noop': windowed table\(s\) t4 need "
                                          r"ordering='partition' \(got 'key'\)"):
        system.actor(sales, tables=[per_minute], ordering="key", concurrency=4)(noop)
    with pytest.raises(ConfigError, match="on_close must be an `async def` function"):
        per_minute.on_close(print)
    with pytest.raises(ConfigError, match=r"on_close two\(\) must take 3 arguments"):

        @per_minute.on_close
        async def two(a: Any, b: Any) -> None: ...

    with pytest.raises(TableError, match="used outside a handler"):
        per_minute["x"]


async def noop(event: Any) -> None: ...
