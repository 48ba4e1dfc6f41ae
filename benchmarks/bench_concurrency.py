"""Events in flight per partition: ratios against raw loops measured in the same run.

    python benchmarks/bench_concurrency.py [--rounds 3] [--only io,cpu,latency,rss] [--json out]

- ``io``: one worker, 16 partitions, 1,000 keys, a handler awaiting 10 ms, ``ordering="key"``
  (``concurrency=256``) and ``"partition"``, against a raw unordered concurrent loop (per
  partition: XREADGROUP COUNT 100, decode, handle the 100 concurrently, XACK).
- ``cpu``: a no-op handler, 200k events: ``ordering="key"`` against ``"partition"``.
- ``latency``: paced single sends (1,000 and 5,000 events/s) to one worker process: p50, p99
  and p999 of send-to-handler time, against a raw loop that reads all 16 partition streams
  with one blocking XREADGROUP (in a process of its own too).
- ``rss``: peak RSS of a worker draining a 10^6-event backlog, ``"key"`` against
  ``"partition"``.

Each figure is the median of ``--rounds`` rounds; ratios compare figures of the same run.
Nothing here is a pass/fail test. The machine's load (``os.getloadavg``) is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from typing import Any

import trio

from actorstream import LeaseTiming, Record, System, running
from actorstream._transport import Client
from actorstream.testing import RedisServer

HERE = os.path.dirname(os.path.abspath(__file__))
PARTITIONS = 16


class Job(Record):
    key: int
    seq: int
    sent: float = 0.0  # time.time() at send: latency across processes


def make_system(url: str, app: str, **settings: Any) -> tuple[System, Any]:
    system = System(app, url, install_signal_handlers=False, lease_timing=LeaseTiming(),
                    **settings)
    return system, system.stream("jobs", record=Job, partitions=PARTITIONS, key="key")


async def fill(url: str, app: str, n: int, keys: int) -> None:
    system, stream = make_system(url, app)
    async with system:
        for i in range(0, n, 10_000):
            await stream.send_many([Job(key=j % keys, seq=j) for j in range(i, min(n, i + 10_000))])


# -- throughput --------------------------------------------------------------------------------


async def runtime(url: str, app: str, n: int, keys: int, pause: float, **options: Any) -> float:
    """Events/s of one worker (in this process) draining a backlog of ``n``."""
    await fill(url, app, n, keys)
    system, stream = make_system(url, app)
    count = 0
    done = trio.Event()

    @system.actor(stream, name="work", **options)
    async def work(job: Job) -> None:
        nonlocal count
        if pause:
            await trio.sleep(pause)
        count += 1
        if count == n:
            done.set()

    t0 = time.perf_counter()
    async with running(system):
        await done.wait()
        elapsed = time.perf_counter() - t0
    return n / elapsed


async def raw_concurrent(url: str, app: str, n: int, keys: int, pause: float) -> float:
    """The raw unordered concurrent loop: per partition, read 100, decode and handle them
    concurrently, ack them; no fencing, no order."""
    await fill(url, app, n, keys)
    _system, stream = make_system(url, app)
    decode = stream.format_decoder
    streams = [stream.stream_key(p) for p in range(PARTITIONS)]
    done = 0
    finished = trio.Event()

    async def handle(fields: Any) -> None:
        nonlocal done
        decode(fields)
        if pause:
            await trio.sleep(pause)
        done += 1
        if done == n:
            finished.set()

    async with Client.from_url(url, max_connections=PARTITIONS + 2) as client:
        for key in streams:
            await client.execute("XGROUP", "CREATE", key, "g", "0")

        async def consume(key: str) -> None:
            async with client.dedicated() as conn:
                while True:
                    reply = await conn.execute(
                        "XREADGROUP", "GROUP", "g", "c", "COUNT", 100, "BLOCK", 100,
                        "STREAMS", key, ">",
                    )
                    if not reply:
                        continue
                    entries = reply[0][1]
                    async with trio.open_nursery() as nursery:
                        for _id, fields in entries:
                            nursery.start_soon(handle, fields)
                    await conn.execute("XACK", key, "g", *[e[0] for e in entries])

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for key in streams:
                nursery.start_soon(consume, key)
            await finished.wait()
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
    return n / elapsed


# -- latency -----------------------------------------------------------------------------------

WORKER_CHILD = r"""
import json, sys, time, trio
sys.path.insert(0, {here!r})
from bench_concurrency import make_system, running
url, n, options = {url!r}, {n}, {options!r}
system, stream = make_system(url, "lat")
lat = []
done = trio.Event()
@system.actor(stream, name="work", **options)
async def work(job):
    lat.append(time.time() - job.sent)
    if len(lat) >= n:
        done.set()
async def main():
    async with running(system):
        cpu0 = time.process_time()  # from here: what the events cost, not the start
        print("ready", flush=True)
        with trio.move_on_after(120):
            await done.wait()
    print(json.dumps({{"lat": lat, "cpu": time.process_time() - cpu0}}), flush=True)
trio.run(main)
"""

RAW_CHILD = r"""
import json, sys, time, trio
sys.path.insert(0, {here!r})
from bench_concurrency import make_system
from actorstream._transport import Client
url, n = {url!r}, {n}
system, stream = make_system(url, "lat")
decode = stream.format_decoder
keys = [stream.stream_key(p) for p in range(16)]
lat = []
async def main():
    async with Client.from_url(url) as client:
        for key in keys:
            try:
                await client.execute("XGROUP", "CREATE", key, "g", "$", "MKSTREAM")
            except Exception:
                pass
        cpu0 = time.process_time()  # from here: what the events cost, not the start
        print("ready", flush=True)
        async with client.dedicated() as conn:
            while len(lat) < n:
                reply = await conn.execute(
                    "XREADGROUP", "GROUP", "g", "c", "COUNT", 100, "BLOCK", 1000,
                    "STREAMS", *keys, *[">"] * len(keys), timeout=5,
                )
                if not reply:
                    continue
                acks = []
                for key, entries in reply:
                    for _id, fields in entries:
                        lat.append(time.time() - decode(fields).sent)
                    acks.append(("XACK", key, "g", *[e[0] for e in entries]))
                await conn.pipeline(acks)
    print(json.dumps({{"lat": lat, "cpu": time.process_time() - cpu0}}), flush=True)
trio.run(main)
"""


def child_code(name: str, url: str, n: int) -> str:
    if name == "raw":
        return RAW_CHILD.format(here=HERE, url=url, n=n)
    options = {} if name == "partition" else {"ordering": name}
    return WORKER_CHILD.format(here=HERE, url=url, n=n, options=options)


async def paced(url: str, rate: int, seconds: float, name: str) -> dict[str, float]:
    """Run a consumer process (``name``: raw, partition or key), send ``rate`` single
    events/s for ``seconds``, return its latency percentiles (ms)."""
    n = int(rate * seconds)
    system, stream = make_system(url, "lat")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", child_code(name, url, n)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    buf = b""
    while b"ready" not in buf:
        chunk = await proc.stdout.receive_some()
        if not chunk:
            raise RuntimeError("the consumer process exited before it was ready")
        buf += chunk
    await trio.sleep(3.0)  # leases acquired, groups created
    async with system:
        t0 = trio.current_time()
        for i in range(n):
            await trio.sleep_until(t0 + i / rate)
            await stream.send(Job(key=i % 1000, seq=i, sent=time.time()))
        while True:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                break
            buf += chunk
    await proc.wait()
    got = json.loads(buf.split(b"ready", 1)[1])
    lat = sorted(got["lat"])
    figures = {q: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
               for q, p in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}
    figures["cpu_us"] = got["cpu"] / n * 1e6  # the consumer process's CPU per event
    return figures


# -- memory ------------------------------------------------------------------------------------

RSS_CHILD = r"""
import sys, trio
sys.path.insert(0, {here!r})
from bench_concurrency import make_system, running
url, n, options = {url!r}, {n}, {options!r}
def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
async def main():
    system, stream = make_system(url, "rss")
    count = 0
    done = trio.Event()
    @system.actor(stream, name="work_" + options.get("ordering", "partition"), **options)
    async def work(job):
        nonlocal count
        count += 1
        if count == n:
            done.set()
    async with running(system):
        await done.wait()
    print(hwm_kb())
trio.run(main)
"""


def peak_rss(url: str, n: int, options: dict[str, Any]) -> float:
    out = subprocess.run(
        [sys.executable, "-c",
         RSS_CHILD.format(here=HERE, url=url, n=n, options=options)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return int(out[-1]) / 1024


# -- the run -----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_io(rounds: int, n: int) -> dict[str, float]:
    figures: dict[str, list[float]] = {"raw": [], "key": [], "partition": []}
    for r in range(rounds):
        with RedisServer() as server:
            url = server.url
            figures["raw"].append(trio.run(raw_concurrent, url, f"raw{r}", n, 1000, 0.01))
            figures["key"].append(trio.run(partial(
                runtime, url, f"key{r}", n, 1000, 0.01, ordering="key", concurrency=256)))
            figures["partition"].append(
                trio.run(runtime, url, f"part{r}", n // 10, 1000, 0.01))
    return {k: median(v) for k, v in figures.items()}


def run_cpu(rounds: int, n: int) -> dict[str, float]:
    """Medians of ``rounds`` rounds; the order of the three runs rotates from round to round
    (the first run of a round met a fresh server), and each round's ratios are printed."""
    names = ["partition", "key", "none"]
    figures: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        with RedisServer() as server:
            for name in names[r % 3:] + names[: r % 3]:
                options = {} if name == "partition" else {"ordering": name}
                figures[name].append(trio.run(partial(
                    runtime, server.url, f"{name[0]}{r}", n, 10_000, 0.0, **options)))
        print(f"  cpu round {r + 1}: key/partition "
              f"{figures['key'][-1] / figures['partition'][-1]:.2f}, none/partition "
              f"{figures['none'][-1] / figures['partition'][-1]:.2f}")
    return {k: median(v) for k, v in figures.items()}


def run_latency(rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    """Medians of ``rounds`` rounds; the order of the three consumers rotates from round to
    round, and each round's p99/p999 ratios against that round's raw loop are printed."""
    out: dict[str, dict[str, list[float]]] = {}
    names = ["raw", "partition", "key"]
    for r in range(rounds):
        for rate in (1000, 5000):
            for name in names[r % 3:] + names[: r % 3]:
                with RedisServer() as server:
                    got = trio.run(paced, server.url, rate, seconds, name)
                for q, v in got.items():
                    out.setdefault(f"{name}@{rate}", {}).setdefault(q, []).append(v)
            raw = out[f"raw@{rate}"]
            print(f"  latency round {r + 1} at {rate}/s, p99/p999 against raw: " + ", ".join(
                f"{name} {out[f'{name}@{rate}']['p99'][-1] / raw['p99'][-1]:.1f}x/"
                f"{out[f'{name}@{rate}']['p999'][-1] / raw['p999'][-1]:.1f}x"
                for name in names[1:]) + "; consumer CPU per event: " + ", ".join(
                f"{name} {out[f'{name}@{rate}']['cpu_us'][-1]:.0f} us" for name in names),
                flush=True)
    return {k: {q: median(v) for q, v in qs.items()} for k, qs in out.items()}


def run_rss(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for ordering in ("partition", "key"):
        with RedisServer() as server:
            trio.run(fill, server.url, "rss", n, 10_000)
            options = {} if ordering == "partition" else {"ordering": "key",
                                                          "concurrency": 256}
            out[ordering] = peak_rss(server.url, n, options)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="io,cpu,latency,rss")
    parser.add_argument("--io-events", type=int, default=50_000)
    parser.add_argument("--cpu-events", type=int, default=200_000)
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--rss-events", type=int, default=1_000_000)
    parser.add_argument("--json", help="write the figures to this file")
    args, _ = parser.parse_known_args()
    only = set(args.only.split(","))
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    print(f"events in flight: {args.rounds} round(s), medians; "
          f"load average {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    if "io" in only:
        io = results["io"] = run_io(args.rounds, args.io_events)
        print("\nI/O-bound (10 ms handler, 1,000 keys, 16 partitions), events/s:")
        print(f"  raw unordered concurrent loop   {io['raw']:>10,.0f}   1.00")
        print(f"  ordering='key', concurrency=256 {io['key']:>10,.0f}   "
              f"{io['key'] / io['raw']:.2f}  (target >= 0.8)")
        print(f"  ordering='partition'            {io['partition']:>10,.0f}   "
              f"{io['partition'] / io['raw']:.3f}", flush=True)
    if "cpu" in only:
        cpu = results["cpu"] = run_cpu(args.rounds, args.cpu_events)
        print(f"\nCPU-bound (no-op handler, {args.cpu_events:,} events), events/s:")
        for name in ("partition", "key", "none"):
            print(f"  ordering={name!r:<12} {cpu[name]:>10,.0f}   "
                  f"{cpu[name] / cpu['partition']:.2f}")
        print("  (target: 'key' >= 0.8 of 'partition')", flush=True)
    if "latency" in only:
        lat = results["latency"] = run_latency(args.rounds, args.latency_seconds)
        print("\nlatency, send to handler (ms), paced single sends to one worker process:")
        for rate in (1000, 5000):
            raw = lat[f"raw@{rate}"]
            for name in ("raw", "partition", "key"):
                got = lat[f"{name}@{rate}"]
                ratios = " ".join(f"{got[q] / raw[q]:.1f}x" for q in ("p50", "p99", "p999"))
                print(f"  {rate}/s {name:<10} p50 {got['p50']:6.2f}  p99 {got['p99']:6.2f}  "
                      f"p999 {got['p999']:6.2f}   ({ratios}; consumer CPU per event "
                      f"{got['cpu_us']:.0f} us)")
        print("  (target: p99 and p999 within 2x of raw)", flush=True)
    if "rss" in only:
        rss = results["rss"] = run_rss(args.rss_events)
        print(f"\npeak RSS draining a {args.rss_events:,} backlog: partition "
              f"{rss['partition']:.0f} MB, key/256 {rss['key']:.0f} MB "
              f"({rss['key'] / rss['partition']:.2f}x; target <= 1.5x)", flush=True)
    results["load_after"] = os.getloadavg()
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
