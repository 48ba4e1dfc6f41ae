"""Throughput on one Redis and on a 3-primary Redis Cluster, in the same run.

    python benchmarks/bench_cluster.py [--events 200000] [--partitions 16] [--json out.json]

The workloads of bench_runtime.py (one worker process, no-op handler, 3-field records), run on:
one plain Redis, one Redis in Cluster mode owning every slot (the routing overhead alone), and
3 primaries (the partitions spread by slot). Figures are ev/s and ratios against the raw
16-reader loop on the plain Redis of this same run; the machine's core count is printed beside
them, because a cluster only multiplies throughput when its primaries get cores of their own
(on a 2-core machine three primaries, the worker and the producer share two cores).

Each figure is the median of ``--rounds`` rounds, the topologies taking turns within a round,
so that a machine shared with other work (load comes and goes) affects them alike; the spread
(min-max) is printed too. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_runtime import fill, raw_consume, raw_produce, runtime_consume

from actorstream.testing import RedisCluster, RedisServer


@contextmanager
def topology(name: str) -> Iterator[str]:
    if name == "one Redis":
        with RedisServer() as server:
            yield server.url
    elif name == "1-node Cluster":
        with RedisCluster(primaries=1) as cluster:
            yield cluster.url
    else:
        with RedisCluster(primaries=3) as cluster:
            yield cluster.url


TOPOLOGIES = ("one Redis", "1-node Cluster", "3 primaries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the figures to this file")
    args, _ = parser.parse_known_args()
    n, parts = args.events, args.partitions
    measures: dict[str, Callable[[str], float]] = {
        "raw XREADGROUP+XACK, 16 readers": lambda url: trio.run(raw_consume, url, parts, n),
        "per-event handler (end to end)": lambda url: trio.run(
            runtime_consume, url, parts, n, "event"
        ),
        "batch handler (end to end)": lambda url: trio.run(
            runtime_consume, url, parts, n, "batch"
        ),
        "raw pipelined XADD": lambda url: trio.run(raw_produce, url, parts, n),
        "send_many (encode + XADD)": lambda url: trio.run(fill, url, "sm", parts, n),
    }
    samples: dict[str, dict[str, list[float]]] = {t: {m: [] for m in measures} for t in TOPOLOGIES}
    for round_ in range(args.rounds):
        for label, measure in measures.items():
            order = TOPOLOGIES[round_ % 3 :] + TOPOLOGIES[: round_ % 3]
            for name in order:
                with topology(name) as url:  # a fresh server per measure: no leftovers
                    samples[name][label].append(measure(url))
    results = {t: {m: statistics.median(v) for m, v in ms.items()} for t, ms in samples.items()}
    base_consume = results["one Redis"]["raw XREADGROUP+XACK, 16 readers"]
    base_produce = results["one Redis"]["raw pipelined XADD"]
    cores = os.cpu_count()
    load = os.getloadavg()[0]
    print(
        f"\nactorstream on one Redis vs a Redis Cluster: {n} events, {parts} partitions, one "
        f"worker process; {cores} cores ({platform.processor() or platform.machine()}), load "
        f"average {load:.1f} at the end; medians of {args.rounds} rounds"
    )
    print(f"{'measure (ev/s, ratio to raw on one Redis)':<36}" + "".join(
        f"{t:>24}" for t in TOPOLOGIES
    ))
    for label in measures:
        base = base_produce if "XADD" in label else base_consume
        cells = "".join(
            f"{results[t][label]:>14,.0f} ({results[t][label] / base:>5.2f})" for t in TOPOLOGIES
        )
        print(f"{label:<36}{cells}")
    print("spread (min-max, ev/s):")
    for label in measures:
        cells = "".join(
            f"{min(samples[t][label]):>12,.0f}-{max(samples[t][label]):<11,.0f}" for t in TOPOLOGIES
        )
        print(f"  {label:<34}{cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"cores": cores, "events": n, "partitions": parts, "median": results,
                 "samples": samples},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
