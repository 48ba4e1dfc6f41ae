"""Rebalance benchmark: re-own time after kill -9 and after a graceful leave, moves per join.

    .venv/bin/python benchmarks/bench_rebalance.py [--trials 3] [--partitions 16]
                                                   [--timing fast|default]

Real redis-server (free port) and real worker subprocesses (tests/integration/apps/
rebalance_app.py) under a steady produce load. Times come from sampling every lease key every
20 ms (``LeaseMonitor``): "re-own" is the time from the fault (kill -9 / SIGTERM sent) until every
partition is held by a surviving worker; "running" additionally waits until every survivor's
published status runs exactly the partitions it holds (telemetry every 0.2 s, so it carries up
to ~0.45 s of observation lag). Moves per join are compared with ``min_moves`` (the fewest any
balanced assignment can move) and with the transitions seen (a partition that bounces counts
twice). Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "integration" / "apps"))

from rebalance_harness import Cluster, Producer, moved, pid_of

from actorstream import LeaseTiming
from actorstream._core.assignment import Slot, min_moves
from actorstream._transport import Client
from actorstream.testing import RedisServer

TIMINGS = {
    "fast": LeaseTiming(
        ttl=3.0,
        renew_interval=1.0,
        heartbeat_interval=0.5,
        member_timeout=3.0,
        self_fence_margin=0.5,
    ),
    "default": LeaseTiming(),
}


def timing_env(t: LeaseTiming) -> dict[str, str]:
    return {
        "LEASE_TTL": str(t.ttl),
        "LEASE_RENEW": str(t.renew_interval),
        "HEARTBEAT": str(t.heartbeat_interval),
        "MEMBER_TIMEOUT": str(t.member_timeout),
        "FENCE_MARGIN": str(t.self_fence_margin),
        "HANDLE_DELAY": "0.001",
    }


async def one_fault(
    partitions: int, timing: LeaseTiming, how: str, trial: int
) -> tuple[float, float, int]:
    """Three workers, one removed by ``how``; (re-own s, running s, partitions it held)."""
    with RedisServer() as server:
        async with Client.from_url(server.url) as client:
            app = f"bench{how}{trial}"
            c = Cluster(server, client, app, partitions, **timing_env(timing))
            producer = Producer(server.url, app, partitions)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(c.monitor.run, 0.02)
                    nursery.start_soon(producer.run, 1000.0)
                    for _ in range(3):
                        c.start_worker()
                    owners = await c.settled(timeout=60)
                    victim = c.workers[trial % 3]
                    held = sum(1 for h in owners.values() if pid_of(h) == victim.pid)
                    await trio.sleep(0.5)
                    if how == "kill":
                        victim.kill()
                    else:
                        victim.terminate()
                    t0 = trio.current_time()
                    survivors = c.live_pids() - {victim.pid}
                    await c.settled(survivors, timeout=timing.t_own() + 30)
                    running = trio.current_time() - t0
                    owned_at = c.monitor.all_owned_at(survivors, t0)
                    assert owned_at is not None
                    producer.stop()
                    nursery.cancel_scope.cancel()
            finally:
                c.close()
    return owned_at - t0, running, held


async def joins(
    partitions: int, timing: LeaseTiming, up_to: int
) -> list[tuple[int, int, int, int]]:
    """Workers join one at a time: (members, min moves, moved, transitions) per join."""
    slots = [Slot("handle", p) for p in range(partitions)]
    rows = []
    with RedisServer() as server:
        async with Client.from_url(server.url) as client:
            c = Cluster(server, client, "benchjoin", partitions, **timing_env(timing))
            producer = Producer(server.url, "benchjoin", partitions)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(c.monitor.run, 0.02)
                    nursery.start_soon(producer.run, 1000.0)
                    c.start_worker()
                    owners = await c.settled(timeout=60)
                    for n in range(2, up_to + 1):
                        t0 = trio.current_time()
                        c.start_worker()
                        new = await c.settled(timeout=60)
                        want = min_moves(
                            set(new.values()),
                            slots,
                            {Slot("handle", p): w for p, w in owners.items()},
                        )
                        rows.append((n, want, moved(owners, new), c.monitor.transitions(t0)))
                        owners = new
                    producer.stop()
                    nursery.cancel_scope.cancel()
            finally:
                c.close()
    return rows


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} {min(xs):6.2f} {max(xs):6.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--timing", choices=sorted(TIMINGS), default="fast")
    parser.add_argument("--joins-up-to", type=int, default=5)
    args = parser.parse_args()
    timing = TIMINGS[args.timing]
    print(
        f"timing {args.timing}: ttl={timing.ttl:g}s renew={timing.renew_interval:g}s "
        f"heartbeat={timing.heartbeat_interval:g}s member_timeout={timing.member_timeout:g}s "
        f"-> T_own={timing.t_own():g}s; {args.partitions} partitions, 3 workers, "
        f"{args.trials} trials"
    )
    print()
    print(
        f"{'fault':<16} {'re-own (median min max) s':>27} {'running (median min max) s':>28}"
        f" {'held':>5}"
    )
    for how, label in (("kill", "kill -9"), ("term", "graceful leave")):
        reown, running, held = [], [], []
        for trial in range(args.trials):
            a, b, h = await one_fault(args.partitions, timing, how, trial)
            reown.append(a)
            running.append(b)
            held.append(h)
        print(f"{label:<16} {fmt(reown):>27} {fmt(running):>28} {statistics.mean(held):5.1f}")
    print()
    print(f"{'join -> members':<16} {'minimum moves':>14} {'moved':>6} {'transitions':>12}")
    for n, want, got, transitions in await joins(args.partitions, timing, args.joins_up_to):
        print(f"{n:<16} {want:>14} {got:>6} {transitions:>12}")


if __name__ == "__main__":
    trio.run(main)
