"""Windows benchmark: a tumbling count against the stateless loop, in the same run.

    python benchmarks/bench_windows.py [--events 100000] [--rounds 3]

One worker (in this process), 16 partitions, 1,000 keys, a 4-field record whose ``ts`` field is
the event time; the events cover 10 minutes of event time, so windows close during the run.
Three workloads, alternated within each round so they share the machine's load:

- stateless: a no-op handler (the reference);
- table: one ``counts[k] += 1`` on a plain table (for comparison);
- tumbling: one ``per_minute[k] += 1`` on ``Tumbling(60, grace=5)``, with an ``on_close`` that
  counts the closed windows (about 9,000 close during a run; each leaves the table).

Reported: events/s of each, the worker process's CPU time per event (``time.process_time``
over the run: Redis's own CPU is not in it, and it is less sensitive to the machine's load than
the rate), and the median ratio of rates against that round's stateless run (target: tumbling
>= 0.6x). The order of the workloads alternates between rounds. Nothing here is a pass/fail
test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio

from actorstream import LeaseTiming, Record, System, Tumbling, Window, running
from actorstream.testing import RedisServer

PARTITIONS = 16
T0 = 1_700_000_040.0


class Order(Record):
    order_id: int
    amount: int
    note: str
    ts: float


async def one_run(url: str, app: str, n: int, mode: str) -> tuple[float, int, float]:
    system = System(app, url, install_signal_handlers=False, lease_timing=LeaseTiming())
    stream = system.stream(
        "orders", record=Order, partitions=PARTITIONS, key="order_id", time="ts"
    )
    counts = system.table("counts", value=int, default=0)
    per_minute = system.table("per_minute", value=int, default=0, window=Tumbling(60, grace=5))
    async with system:
        step = 600.0 / n
        batch = [Order(i % 1000, i, "x", T0 + i * step) for i in range(n)]
        for i in range(0, n, 10_000):
            await stream.send_many(batch[i : i + 10_000])
    done = trio.Event()
    handled = 0
    closed = 0

    def one() -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    if mode == "stateless":

        @system.actor(stream, name="work")
        async def plain(order: Order) -> None:
            one()

    elif mode == "table":

        @system.actor(stream, name="work", tables=[counts])
        async def table(order: Order) -> None:
            counts[order.order_id] += 1
            one()

    else:

        @system.actor(stream, name="work", tables=[per_minute])
        async def tumbling(order: Order) -> None:
            per_minute[order.order_id] += 1
            one()

        @per_minute.on_close
        async def emit(key: str, window: Window, value: int) -> None:
            nonlocal closed
            closed += 1

    t0 = time.perf_counter()
    c0 = time.process_time()
    async with running(system) as worker:
        await done.wait()
        # the last commit rides on the next round trip: wait until every event is acked
        while sum(p.acked for p in worker.statistics().partitions) < n:
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return n / elapsed, closed, cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    modes = ("stateless", "table", "tumbling")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes[1:]}
    closed = 0
    with RedisServer() as server:
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]  # neither always first nor last
            for mode in order:
                rate, closed_now, cpu = trio.run(one_run, server.url, f"w{r}{mode[:2]}",
                                                 args.events, mode)  # fmt: skip
                rates[mode].append(rate)
                cpus[mode].append(cpu * 1e6)
                closed = max(closed, closed_now)
            for mode in modes[1:]:
                ratios[mode].append(rates[mode][-1] / rates["stateless"][-1])
            print(f"round {r + 1}: " + ", ".join(
                f"{m} {rates[m][-1]:,.0f} ev/s ({cpus[m][-1]:.1f} us CPU/ev)" for m in modes
            ))  # fmt: skip
    print(f"\nwindows ({args.events:,} events over 10 min of event time, {PARTITIONS} "
          f"partitions, 1,000 keys, {closed:,} windows closed per tumbling run; medians of "
          f"{args.rounds} rounds; CPU: the worker process's, per event):")  # fmt: skip
    print(f"  stateless     {statistics.median(rates['stateless']):>10,.0f} ev/s   "
          f"{statistics.median(cpus['stateless']):5.1f} us CPU/ev")  # fmt: skip
    targets = {"table": None, "tumbling": 0.6}
    for mode in modes[1:]:
        ratio = statistics.median(ratios[mode])
        target = targets[mode]
        goal = "" if target is None else (
            f"target >= {target}x: {'met' if ratio >= target else 'NOT met'}; "
        )  # fmt: skip
        print(f"  {mode:<13} {statistics.median(rates[mode]):>10,.0f} ev/s   "
              f"{statistics.median(cpus[mode]):5.1f} us CPU/ev   {ratio:.2f}x "
              f"stateless ({goal}rounds: {', '.join(f'{x:.2f}' for x in ratios[mode])})")

if __name__ == "__main__":
    main()
