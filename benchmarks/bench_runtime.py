"""End-to-end runtime benchmark: ratios against a raw transport loop measured in the same run.

    python benchmarks/bench_runtime.py [--events 200000] [--partitions 16] [--rss] [--json out]

Workload (the design brief's comparison): 200k events of a 3-field record, 16 partitions, one worker
process, no-op handler. Reported:

- raw loop: XREADGROUP COUNT 100 + XACK, one reader task and connection per stream key (the
  runtime's concurrency), no decoding, no fencing, no handler;
- actorstream per-event handler, batch handler and iterator form, end to end (decode included);
- producers: ``send_many`` against a raw pipelined XADD loop of the same entries;
- with ``--rss``: peak RSS of a worker draining a 10^6-event backlog (in a subprocess).

Nothing here is a pass/fail test; the figures are ratios from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import trio
import trio.lowlevel

from actorstream import LeaseTiming, Record, System, running
from actorstream._transport import Client
from actorstream.testing import RedisServer


class Order(Record):
    order_id: int
    amount: int
    note: str


def events(n: int) -> list[Order]:
    return [Order(order_id=i % 10_000, amount=i, note="x") for i in range(n)]


def make_system(url: str, app: str, partitions: int, **settings: Any) -> tuple[System, Any]:
    system = System(app, url, install_signal_handlers=False, lease_timing=LeaseTiming(),
                    **settings)
    stream = system.stream("orders", record=Order, partitions=partitions, key="order_id")
    return system, stream


async def fill(url: str, app: str, partitions: int, n: int) -> float:
    system, stream = make_system(url, app, partitions)
    async with system:
        batch = events(n)
        t0 = time.perf_counter()
        for i in range(0, n, 10_000):
            await stream.send_many(batch[i : i + 10_000])
        return n / (time.perf_counter() - t0)


async def raw_produce(url: str, partitions: int, n: int) -> float:
    _system, stream = make_system(url, "rawprod", partitions)
    commands = [stream._command(e) for e in events(n)]  # encoding excluded: raw transport only
    async with Client.from_url(url) as client:
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            await client.pipeline(commands[i : i + 1000])
        return n / (time.perf_counter() - t0)


async def raw_consume(url: str, partitions: int, n: int) -> float:
    """The ceiling: one task and connection per stream, XREADGROUP COUNT 100 then XACK, no decode.

    Same concurrency as the runtime (one reader per partition), none of its work.
    """
    await fill(url, "raw", partitions, n)
    keys = [f"as:{{raw:orders:{p}}}:s" for p in range(partitions)]
    async with Client.from_url(url, max_connections=partitions) as client:
        for key in keys:
            await client.execute("XGROUP", "CREATE", key, "g", "0")
        done = 0
        finished = trio.Event()

        async def drain(key: str) -> None:
            nonlocal done
            async with client.dedicated() as conn:
                while done < n:
                    reply = await conn.execute(
                        "XREADGROUP", "GROUP", "g", "c", "COUNT", 100, "STREAMS", key, ">"
                    )
                    if not reply:
                        await trio.lowlevel.checkpoint()
                        continue
                    ids = [e[0] for e in reply[0][1]]
                    await conn.execute("XACK", key, "g", *ids)
                    done += len(ids)
            finished.set()

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(drain, key)
            await finished.wait()
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
        return n / elapsed


async def raw_consume_sequential(url: str, partitions: int, n: int) -> float:
    """The brief's prototype shape: one task, one connection, XREADGROUP COUNT 100 then XACK,
    stream after stream (the design brief measured ~229k ev/s for it)."""
    await fill(url, "rawseq", partitions, n)
    keys = [f"as:{{rawseq:orders:{p}}}:s" for p in range(partitions)]
    async with Client.from_url(url) as client:
        for key in keys:
            await client.execute("XGROUP", "CREATE", key, "g", "0")
        done = 0
        t0 = time.perf_counter()
        async with client.connection() as conn:
            while done < n:
                for key in keys:
                    reply = await conn.execute(
                        "XREADGROUP", "GROUP", "g", "c", "COUNT", 100, "STREAMS", key, ">"
                    )
                    if reply:
                        ids = [e[0] for e in reply[0][1]]
                        await conn.execute("XACK", key, "g", *ids)
                        done += len(ids)
        return n / (time.perf_counter() - t0)


async def runtime_consume(
    url: str, partitions: int, n: int, form: str, metrics: bool = False
) -> float:
    """End to end; ``metrics=True`` serves /metrics (every handler call timed for the histogram)."""
    app = f"rt{form}{'m' if metrics else ''}"
    await fill(url, app, partitions, n)
    settings = {"metrics_port": 0, "metrics_host": "127.0.0.1"} if metrics else {}
    system, stream = make_system(url, app, partitions, **settings)
    count = 0
    done = trio.Event()

    if form == "event":

        @system.actor(stream, name="noop")
        async def noop(event: Order) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

    elif form == "batch":

        @system.actor(stream, name="noop", batch=True)
        async def noop_batch(batch: list[Order]) -> None:
            nonlocal count
            count += len(batch)
            if count >= n:
                done.set()

    else:

        @system.actor(stream, name="noop", iterator=True)
        async def noop_iter(evs: Any) -> None:
            nonlocal count
            async for _ in evs:
                count += 1
                if count == n:
                    done.set()

    t0 = time.perf_counter()
    async with running(system):
        await done.wait()
        elapsed = time.perf_counter() - t0
    return n / elapsed


RSS_CHILD = r"""
import sys, trio
sys.path.insert(0, {here!r})
from bench_runtime import make_system, running
url, n = {url!r}, {n}
def hwm_kb():
    # VmHWM belongs to this address space; ru_maxrss would be inherited across fork+exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
async def main():
    before = hwm_kb()
    system, stream = make_system(url, "rss", 16)
    count = 0
    done = trio.Event()
    @system.actor(stream, name="noop")
    async def noop(e):
        nonlocal count
        count += 1
        if count == n:
            done.set()
    async with running(system):
        await done.wait()
    print(before, hwm_kb())
trio.run(main)
"""


def peak_rss(url: str, n: int) -> tuple[float, float]:
    """Fill a 10^6 backlog from this process, then drain it in a fresh worker process."""
    for i in range(0, n, 200_000):
        trio.run(fill, url, "rss", 16, min(200_000, n - i))
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD.format(here=here, url=url, n=n)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def codec_costs(repeat: int = 50_000) -> dict[str, tuple[float, float]]:
    """Encode and decode cost per event (us) of each available codec/compression."""
    import timeit

    from actorstream._codecs import RecordFormat, get_codec

    event = Order(order_id=12345, amount=99, note="a short note")
    out: dict[str, tuple[float, float]] = {}
    combos = [("json", "none"), ("json", "zlib"), ("json", "lz4"), ("msgpack", "none")]
    for codec, compression in combos:
        try:
            get_codec(codec)
            fmt = RecordFormat(record_type=Order, codec=codec, compression=compression)
        except Exception:
            continue
        fields = fmt.encode(event)
        enc = timeit.timeit(lambda fmt=fmt: fmt.encode(event), number=repeat) / repeat * 1e6
        dec = timeit.timeit(lambda fmt=fmt, f=fields: fmt.decode(f), number=repeat) / repeat * 1e6
        out[f"{codec}+{compression}"] = (enc, dec)
    import json as stdjson

    payload = RecordFormat(record_type=Order).encode(event)[3]
    out["(stdlib json.loads only)"] = (
        0.0,
        timeit.timeit(lambda: stdjson.loads(payload), number=repeat) / repeat * 1e6,
    )
    return out


def _metrics_supported() -> bool:
    try:
        System("probe", metrics_port=0)
    except Exception:
        return False  # a version before /metrics
    return True


def report_quick(results: dict[str, float], n: int, parts: int) -> None:
    raw = results["raw_consume"]
    extras = [m for m in ("prometheus_client", "opentelemetry") if m in sys.modules]
    print(f"\nhot path: {n} events, {parts} partitions; extras imported: {extras or 'none'}")
    for key, label in [
        ("raw_consume_sequential", "raw, one sequential reader"),
        ("event_consume", "per-event handler"),
        ("event_consume_metrics", "per-event handler, /metrics served"),
    ]:
        if key in results:
            print(f"{label:<40}{results[key]:>12,.0f}{results[key] / raw:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--rss", action="store_true", help="also measure a 10^6 backlog's RSS")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--quick", action="store_true",
                        help="only the raw loop and the per-event handler (with and without "
                             "/metrics): the hot path ratio")
    args, _ = parser.parse_known_args()
    n, parts = args.events, args.partitions
    results: dict[str, float] = {}
    with RedisServer() as server:
        url = server.url
        results["raw_consume"] = trio.run(raw_consume, url, parts, n)
        results["raw_consume_sequential"] = trio.run(raw_consume_sequential, url, parts, n)
        results["event_consume"] = trio.run(runtime_consume, url, parts, n, "event")
        if _metrics_supported():
            results["event_consume_metrics"] = trio.run(
                runtime_consume, url, parts, n, "event", True
            )
        if args.quick:
            report_quick(results, n, parts)
            return
        results["batch_consume"] = trio.run(runtime_consume, url, parts, n, "batch")
        results["iterator_consume"] = trio.run(runtime_consume, url, parts, n, "iterator")
        results["raw_produce"] = trio.run(raw_produce, url, parts, n)
        server.restart()
        results["send_many"] = trio.run(fill, url, "sm", parts, n)
        if args.rss:
            with RedisServer() as big:
                before, after = peak_rss(big.url, 1_000_000)
                results["rss_before_mb"] = before
                results["rss_peak_mb"] = after
    raw = results["raw_consume"]
    print(f"\nactorstream runtime benchmark: {n} events, {parts} partitions, one process")
    print(f"{'measure':<34}{'ev/s':>12}{'ratio':>10}")
    seq = results["raw_consume_sequential"]
    print(f"{'raw XREADGROUP+XACK, 16 readers':<34}{raw:>12,.0f}{1.0:>10.2f}")
    print(f"{'raw, one sequential reader':<34}{seq:>12,.0f}{seq / raw:>10.2f}")
    for key, label in [
        ("event_consume", "per-event handler (end to end)"),
        ("batch_consume", "batch handler (end to end)"),
        ("iterator_consume", "iterator form (end to end)"),
    ]:
        print(f"{label:<34}{results[key]:>12,.0f}{results[key] / raw:>10.2f}")
    if "event_consume_metrics" in results:
        em = results["event_consume_metrics"]
        print(f"{'per-event, /metrics served':<34}{em:>12,.0f}{em / raw:>10.2f}")
    rp = results["raw_produce"]
    print(f"{'raw pipelined XADD (pre-encoded)':<34}{rp:>12,.0f}{1.0:>10.2f}")
    print(f"{'send_many (encode + XADD)':<34}{results['send_many']:>12,.0f}"
          f"{results['send_many'] / rp:>10.2f}")
    print(f"\nper-event handler: {results['event_consume'] / raw:.2f} of the 16-reader raw loop, "
          f"{results['event_consume'] / seq:.2f} of the sequential one (target >= 0.5); "
          f"predecessors ~5k ev/s -> x{results['event_consume'] / 5900:.0f} of runnel")
    print(f"\n{'codec (per event)':<34}{'encode us':>12}{'decode us':>12}")
    for name, (enc, dec) in codec_costs().items():
        print(f"{name:<34}{enc:>12.2f}{dec:>12.2f}")
    if args.rss:
        print(f"peak RSS of a worker draining a 10^6-event backlog: "
              f"{results['rss_peak_mb']:.0f} MB (at start: {results['rss_before_mb']:.0f} MB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)



if __name__ == "__main__":
    main()
