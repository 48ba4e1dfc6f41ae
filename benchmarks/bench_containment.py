"""Containment benchmark: do healthy partitions keep their rate next to poison?

    python benchmarks/bench_containment.py [--events 10000] [--poison 1000] [--rounds 5]

One worker (in this process), 16 partitions, a no-op handler. Two workloads, alternated in the
same run: without poison (every partition holds ``--events`` healthy events) and with poison
(the same, except that one partition holds ``--poison`` poison events interleaved with as many
healthy ones; the handler raises ``ValueError`` for each, default settings). Reported: the
throughput of the 15 other partitions in each (their events over the time from the first
event handled to the last of theirs), the ratio with/without of each round (the two runs of a
round back to back, to share the machine's load), their median (the target: >= 0.90),
and how long the poison partition took.

Nothing here is a pass/fail test; the figures are ratios from one run on one machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
from typing import Any

import trio

from actorstream import LeaseTiming, Record, System, running
from actorstream.testing import RedisServer

PARTITIONS = 16
POISON_PARTITION = 3


class Ev(Record):
    key: int
    seq: int
    poison: bool = False


def keys_of(stream: Any) -> dict[int, list[int]]:
    out: dict[int, list[int]] = collections.defaultdict(list)
    for k in range(1000):
        out[stream.partition_of(Ev(key=k, seq=0))].append(k)
    return out


async def one_run(url: str, app: str, per_partition: int, poison: int) -> dict[str, float]:
    system = System(app, url, install_signal_handlers=False, lease_timing=LeaseTiming())
    stream = system.stream("orders", record=Ev, partitions=PARTITIONS, key="key")
    keys = keys_of(stream)
    partition_of = {k: p for p, ks in keys.items() for k in ks}
    queues: dict[int, list[tuple[int, bool]]] = {}
    for p in range(PARTITIONS):
        ks = keys[p]
        if p == POISON_PARTITION and poison:
            queues[p] = [x for i in range(poison) for x in ((ks[1 + i % (len(ks) - 1)], False),
                                                            (ks[0], True))]
        else:
            queues[p] = [(ks[i % len(ks)], False) for i in range(per_partition)]
    events: list[Ev] = []
    for i in range(max(len(q) for q in queues.values())):
        for p in range(PARTITIONS):
            if i < len(queues[p]):
                key, bad = queues[p][i]
                events.append(Ev(key=key, seq=len(events), poison=bad))
    want = {p: sum(1 for _k, bad in q if not bad) for p, q in queues.items()}
    async with system:
        for i in range(0, len(events), 10_000):
            await stream.send_many(events[i : i + 10_000])
    counts = dict.fromkeys(range(PARTITIONS), 0)
    done: dict[int, float] = {}
    first: list[float] = []
    finished = trio.Event()

    @system.actor(stream, name="handle")
    async def handle(ev: Ev) -> None:
        if not first:
            first.append(trio.current_time())
        if ev.poison:
            raise ValueError(f"event {ev.seq} is poison")
        p = partition_of[ev.key]
        counts[p] += 1
        if counts[p] == want[p]:
            done[p] = trio.current_time()
            if len(done) == PARTITIONS:
                finished.set()

    async with running(system):
        with trio.move_on_after(300):
            await finished.wait()
    healthy = [p for p in range(PARTITIONS) if p != POISON_PARTITION]
    if not all(p in done for p in healthy):
        return {"healthy_rate": math.nan, "poison_partition_seconds": math.nan}
    start = first[0]
    rate = sum(want[p] for p in healthy) / (max(done[p] for p in healthy) - start)
    poisoned = done.get(POISON_PARTITION, math.nan) - start
    return {"healthy_rate": rate, "poison_partition_seconds": poisoned}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    ratios: list[float] = []
    runs: list[dict[str, Any]] = []
    with RedisServer() as server:
        for r in range(args.rounds):
            pair: dict[str, dict[str, float]] = {}
            for name, poison in (("without", 0), ("with", args.poison)):
                try:
                    result = await one_run(server.url, f"b{r}{name}", args.events, poison)
                except Exception as exc:  # report a worker that gave up, do not hide it
                    print(f"round {r} {name} poison: the worker failed: {exc!r}")
                    result = {"healthy_rate": math.nan, "poison_partition_seconds": math.nan}
                print(f"round {r} {name:7s} poison: 15 healthy partitions "
                      f"{result['healthy_rate']:,.0f} ev/s; poison partition done after "
                      f"{result['poison_partition_seconds']:.2f}s", flush=True)
                pair[name] = result
            ratio = pair["with"]["healthy_rate"] / pair["without"]["healthy_rate"]
            ratios.append(ratio)
            runs.append(pair)
            print(f"round {r}: with/without {ratio:.2f}", flush=True)
    median = statistics.median(ratios)
    print(f"healthy-partition throughput with/without poison, median of {len(ratios)} paired "
          f"rounds: {median:.2f} (target >= 0.90; rounds: "
          f"{', '.join(f'{x:.2f}' for x in ratios)})")
    return {"runs": runs, "ratios": ratios, "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per partition")
    parser.add_argument("--poison", type=int, default=1000, help="poison events in one partition")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    figures = trio.run(main_async, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
