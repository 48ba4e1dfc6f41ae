"""Throughput of ``actorstream worker --processes N`` for N = 1 and 2, in the same run.

    python benchmarks/bench_processes.py [--events 200000] [--work 200]

Workload: 16 partitions, a 2-field record, a handler that burns ``--work`` loop iterations of
CPU per event (0: a no-op; one process is then bound by Redis and the event loop, not by the
handler). A backlog is written first; the clock starts once every partition is owned by the N
workers (start-up and rebalancing excluded) and stops when 95% of it is handled (lag + pending
of every group). Ratios are against N = 1 in the same run, on the same machine: not a
pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import trio

from actorstream import Record, System
from actorstream._core.keys import lease_key, stream_key
from actorstream._transport import Client
from actorstream.testing import RedisServer

APP = """
import os
from actorstream import LeaseTiming, Record, System

system = System(os.environ["APP_NAME"], lease_timing=LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0,
    self_fence_margin=0.5))
WORK = int(os.environ.get("WORK", "0"))


class Item(Record):
    key: int
    n: int


items = system.stream("items", record=Item, partitions=16, key="key")


@system.actor(items, batch_size=100)
async def burn(item: Item) -> None:
    x = 0
    for i in range(WORK):
        x += i
"""


class Item(Record):
    key: int
    n: int


async def remaining(client: Client, app: str) -> int:
    """Entries not yet handled: lag + pending of every partition's group (or all, if none)."""
    replies = await client.pipeline(
        [("XINFO", "GROUPS", stream_key(app, "items", p)) for p in range(16)]
        + [("XLEN", stream_key(app, "items", p)) for p in range(16)]
    )
    left = 0
    for groups, length in zip(replies[:16], replies[16:], strict=True):
        if isinstance(groups, Exception) or not groups:
            left += int(length)
            continue
        for group in groups:
            info = dict(zip(group[::2], group[1::2], strict=True))
            left += int(info[b"pending"]) + int(info[b"lag"] or 0)
    return left


async def measure(url: str, app_dir: str, processes: int, n: int, work: int) -> float:
    """Drain rate once every partition is owned by ``processes`` workers (start-up excluded)."""
    app = f"bp{processes}"
    producer = System(app, url, install_signal_handlers=False)
    stream = producer.stream("items", record=Item, partitions=16, key="key")
    async with producer:
        for i in range(0, n, 10_000):
            await stream.send_many(Item(key=j % 1000, n=j) for j in range(i, i + 10_000))
    env = dict(os.environ, APP_NAME=app, WORK=str(work), ACTORSTREAM_REDIS_URL=url,
               PYTHONPATH=os.pathsep.join(p for p in (app_dir, os.environ.get("PYTHONPATH")) if p))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actorstream", "worker", "benchapp:system",
         "--processes", str(processes)],
        env=env, cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async with Client.from_url(url) as client:
            with trio.fail_after(60):
                while True:
                    owners = await client.pipeline(
                        [("GET", lease_key(app, "items", p, "burn")) for p in range(16)]
                    )
                    pids = {o.decode().rsplit("-", 2)[1] for o in owners if o}
                    if all(owners) and len(pids) == processes:
                        break
                    await trio.sleep(0.05)
            t1, r1 = time.perf_counter(), await remaining(client, app)
            with trio.fail_after(600):
                while (r2 := await remaining(client, app)) > n // 20:
                    await trio.sleep(0.02)
            t2 = time.perf_counter()
            return (r1 - r2) / (t2 - t1)
    finally:
        proc.terminate()
        with trio.move_on_after(60) as scope:
            scope.shield = True
            await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--work", type=int, default=200,
                        help="loop iterations of CPU per event in the handler (0: no-op)")
    args, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "benchapp.py").write_text(textwrap.dedent(APP))
        with RedisServer() as server:
            one = trio.run(measure, server.url, tmp, 1, args.events, args.work)
            two = trio.run(measure, server.url, tmp, 2, args.events, args.work)
    print(f"\n--processes: {args.events} events, 16 partitions, handler work {args.work} "
          f"iterations/event, {os.cpu_count()} CPUs")
    print(f"{'processes':<34}{'ev/s':>12}{'ratio':>10}")
    print(f"{'1':<34}{one:>12,.0f}{1.0:>10.2f}")
    print(f"{'2':<34}{two:>12,.0f}{two / one:>10.2f}")


if __name__ == "__main__":
    main()
