"""State benchmark: tables and exactly-once against the stateless loop, in the same run.

    python benchmarks/bench_state.py [--events 100000] [--rounds 3] [--keys 100000]

One worker (in this process), 16 partitions, 1,000 keys, a 3-field record. Three workloads,
alternated within each round so they share the machine's load:

- stateless: a no-op handler (the reference);
- table: the handler does one ``counts[k] += 1`` (committed with the acks);
- exactly-once: the same plus one output event per input (``await out.send(...)``), held and
  committed with the acks.

Reported: events/s of each, the ratio of each round against that round's stateless run, and the
medians (targets: table >= 0.7x, exactly-once >= 0.5x), with the worker's CPU per event (the
stateless figure over each mode's: the ratio the throughput would have if the worker's CPU
alone bounded it). Then restoring: one partition whose
table holds ``--keys`` keys is taken by a fresh worker; the time its actor spent loading them
(state ``restoring``, from statistics; target: ready within 2 s of the lease).

Nothing here is a pass/fail test; the figures are ratios from one run on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import trio

from actorstream import LeaseTiming, Record, System, running
from actorstream.testing import RedisServer

PARTITIONS = 16


class Order(Record):
    order_id: int
    amount: int
    note: str


class Count(Record):
    order_id: int
    count: int


async def one_run(url: str, app: str, n: int, mode: str) -> tuple[float, float]:
    """Events/s of ``mode``, and the worker's CPU seconds per event."""
    system = System(app, url, install_signal_handlers=False, lease_timing=LeaseTiming())
    stream = system.stream("orders", record=Order, partitions=PARTITIONS, key="order_id")
    out = system.stream("counted", record=Count, partitions=PARTITIONS, key="order_id")
    counts = system.table("counts", value=int, default=0)
    async with system:
        batch = [Order(order_id=i % 1000, amount=i, note="x") for i in range(n)]
        for i in range(0, n, 10_000):
            await stream.send_many(batch[i : i + 10_000])
        cpu0 = await redis_cpu(system)
    done = trio.Event()
    handled = 0

    if mode == "stateless":

        @system.actor(stream, name="work")
        async def plain(order: Order) -> None:
            nonlocal handled
            handled += 1
            if handled == n:
                done.set()

    elif mode == "table":

        @system.actor(stream, name="work", tables=[counts])
        async def table(order: Order) -> None:
            nonlocal handled
            counts[order.order_id] += 1
            handled += 1
            if handled == n:
                done.set()

    else:

        @system.actor(stream, name="work", tables=[counts], processing="exactly_once")
        async def exactly_once(order: Order) -> None:
            nonlocal handled
            counts[order.order_id] += 1
            await out.send(Count(order_id=order.order_id, count=counts[order.order_id]))
            handled += 1
            if handled == n:
                done.set()

    t0 = time.perf_counter()
    c0 = time.process_time()
    async with running(system) as worker:
        await done.wait()
        # the last commit rides on the next round trip: wait until every event is acked
        while sum(p.acked for p in worker.statistics().partitions) < n:
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - t0
        mine = time.process_time() - c0
    async with system:
        theirs = await redis_cpu(system) - cpu0
    print(f"  {mode}: {n / elapsed:,.0f} ev/s; CPU per event: worker {mine / n * 1e6:.1f} us, "
          f"Redis {theirs / n * 1e6:.1f} us")
    return n / elapsed, mine / n


async def redis_cpu(system: System) -> float:
    info = (await system.client().execute("INFO", "cpu")).decode()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


async def restore_time(url: str, keys: int) -> tuple[float, float]:
    """Seconds the partition spent loading ``keys`` keys, and from start to running."""
    system = System("restore", url, install_signal_handlers=False, lease_timing=LeaseTiming())
    stream = system.stream("orders", record=Order, partitions=1, key="order_id")
    counts = system.table("counts", value=int, default=0)

    @system.actor(stream, name="work", tables=[counts])
    async def work(order: Order) -> None:
        counts[order.order_id] += 1

    async with system:
        client = system.client()
        key = counts.hash_key(0)
        for start in range(0, keys, 5000):
            args: list[Any] = []
            for k in range(start, min(keys, start + 5000)):
                args += [str(k), str(k).encode()]
            await client.execute("HSET", key, *args)
    t0 = time.perf_counter()
    async with running(system) as worker:
        while True:
            stats = worker.statistics().partitions
            if stats and stats[0].state == "running":
                break
            await trio.sleep(0.001)
        ready = time.perf_counter() - t0
        loaded = stats[0].table_keys
        restored = stats[0].restore_seconds
    assert loaded == {"counts": keys}, loaded
    return restored or 0.0, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    modes = ("stateless", "table", "exactly_once")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes[1:]}
    with RedisServer() as server:
        for r in range(args.rounds):
            for mode in modes:
                rate, cpu = trio.run(one_run, server.url, f"st{r}{mode[:2]}", args.events, mode)
                rates[mode].append(rate)
                cpus[mode].append(cpu)
            for mode in modes[1:]:
                ratios[mode].append(rates[mode][-1] / rates["stateless"][-1])
            print(f"round {r + 1}: " + ", ".join(f"{m} {rates[m][-1]:,.0f} ev/s" for m in modes))
        restored, ready = trio.run(restore_time, server.url, args.keys)
    print(f"\nstate ({args.events:,} events, {PARTITIONS} partitions, 1,000 keys; medians of "
          f"{args.rounds} rounds):")
    print(f"  stateless     {statistics.median(rates['stateless']):>10,.0f} ev/s")
    targets = {"table": 0.7, "exactly_once": 0.5}
    for mode in modes[1:]:
        ratio = statistics.median(ratios[mode])
        mark = "met" if ratio >= targets[mode] else "NOT met"
        print(f"  {mode:<13} {statistics.median(rates[mode]):>10,.0f} ev/s   {ratio:.2f}x "
              f"stateless (target >= {targets[mode]}x: {mark}; rounds: "
              f"{', '.join(f'{x:.2f}' for x in ratios[mode])})")
    cpu = {m: statistics.median(cpus[m]) for m in modes}
    print("  worker CPU per event (medians): " + ", ".join(
        f"{m} {cpu[m] * 1e6:.1f} us" + ("" if m == "stateless" else
                                         f" ({cpu['stateless'] / cpu[m]:.2f}x)")
        for m in modes))
    mark = "met" if restored <= 2.0 else "NOT met"
    print(f"  restoring {args.keys:,} keys: {restored:.2f} s loading, {ready:.2f} s from start "
          f"to running (target: ready within 2 s of the lease: {mark})")


if __name__ == "__main__":
    main()
