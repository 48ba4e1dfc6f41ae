"""Transport benchmark: our trio + hiredis client against redis-benchmark, in the same run.

    python benchmarks/bench_transport.py [--json out.json] [--events 200000]

Starts its own redis-server (never the one on 6379), runs redis-benchmark against it, then our
transport on the same server, and prints ratios (ours / redis-benchmark) with the issue's targets:

- produce: XADD pipelined in batches of 100, one connection (redis-benchmark: -c 1 -P 100);
- consume: XREADGROUP COUNT 100 over 16 streams + XACK of what was read (no redis-benchmark
  equivalent: it is reported on its own);
- PING latency p50/p99: sequential requests on one connection (redis-benchmark: -c 1).

Timings are reported, never asserted: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actorstream._transport import Arg, Client
from actorstream.testing import RedisServer

STREAMS = 16
BATCH = 100
TARGET_PRODUCE = 100_000.0  # XADD/s in pipelines of 100
TARGET_PING_RATIO = 1.5  # our PING p50 within 1.5x of redis-benchmark's


# -- redis-benchmark -------------------------------------------------------------------------


def redis_benchmark(port: int, *args: str) -> list[dict[str, str]]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark not found on PATH (apt install redis-tools)")
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "--csv", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return list(csv.DictReader(io.StringIO(out)))


def theirs_ping(port: int, n: int) -> dict[str, float]:
    rows = redis_benchmark(port, "-t", "ping", "-n", str(n), "-c", "1")
    row = next(r for r in rows if r["test"] == "PING_MBULK")  # what we send: a multibulk PING
    return {
        "rps": float(row["rps"]),
        "p50_us": float(row["p50_latency_ms"]) * 1000,
        "p99_us": float(row["p99_latency_ms"]) * 1000,
    }


def theirs_xadd(port: int, n: int) -> dict[str, float]:
    rows = redis_benchmark(
        port, "-n", str(n), "-c", "1", "-P", str(BATCH), "XADD", "rb", "*", "f", "v"
    )
    return {"rps": float(rows[0]["rps"])}


# -- ours --------------------------------------------------------------------------------------


async def ours_ping(client: Client, n: int) -> dict[str, float]:
    async with client.connection() as conn:
        for _ in range(min(1000, n)):  # warm up
            await conn.execute("PING")
        samples: list[int] = []
        clock = time.perf_counter_ns
        started = clock()
        for _ in range(n):
            t0 = clock()
            await conn.execute("PING")
            samples.append(clock() - t0)
        elapsed = (clock() - started) / 1e9
    samples.sort()
    return {
        "rps": n / elapsed,
        "p50_us": statistics.median(samples) / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
    }


async def raw_trio_ping(port: int, n: int) -> dict[str, float]:
    """The floor for any trio client: a bare trio socket + hiredis loop, no pool, no checks."""
    import hiredis

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    reader = hiredis.Reader()
    ping = hiredis.pack_command(("PING",))
    samples: list[int] = []
    clock = time.perf_counter_ns
    async with stream:
        for i in range(n + min(1000, n)):
            t0 = clock()
            await stream.send_all(ping)
            while reader.gets() is False:
                reader.feed(await stream.receive_some(65536))
            if i >= min(1000, n):
                samples.append(clock() - t0)
    total = sum(samples) / 1e9
    samples.sort()
    return {
        "rps": n / total,
        "p50_us": statistics.median(samples) / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
    }


async def ours_produce(client: Client, events: int) -> dict[str, float]:
    """XADD into 16 streams, round-robin, in pipelines of 100 on one connection."""
    keys = [f"bench:{{p{i}}}:events" for i in range(STREAMS)]
    commands = [("XADD", keys[i % STREAMS], "*", "f", "v") for i in range(BATCH)]
    batches = events // BATCH
    async with client.connection() as conn:
        started = time.perf_counter()
        for _ in range(batches):
            replies = await conn.pipeline(commands)
            if isinstance(replies[-1], Exception):
                raise replies[-1]
        elapsed = time.perf_counter() - started
    return {"rps": batches * BATCH / elapsed, "events": batches * BATCH}


async def ours_consume(client: Client, events: int) -> dict[str, float]:
    """XREADGROUP COUNT 100 over the 16 streams, then XACK what was read, until all is acked."""
    keys = [f"bench:{{p{i}}}:events" for i in range(STREAMS)]
    for key in keys:
        await client.execute("XGROUP", "CREATE", key, "g", "0")
    read: list[Arg] = [
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "COUNT",
        BATCH,
        "STREAMS",
        *keys,
        *([">"] * STREAMS),
    ]
    consumed = 0
    async with client.connection() as conn:
        started = time.perf_counter()
        while consumed < events:
            reply = await conn.execute(*read)
            if not reply:
                break
            acks: list[list[Any]] = []
            for key, entries in reply:
                if entries:
                    acks.append(["XACK", key, "g", *[entry[0] for entry in entries]])
                    consumed += len(entries)
            for result in await conn.pipeline(acks):
                if isinstance(result, Exception):
                    raise result
        elapsed = time.perf_counter() - started
    pending = sum([(await client.execute("XPENDING", key, "g"))[0] for key in keys])
    if consumed != events or pending:
        raise SystemExit(f"consume check failed: consumed {consumed}/{events}, {pending} pending")
    return {"rps": consumed / elapsed, "events": consumed}


# -- report ------------------------------------------------------------------------------------


def median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median p50."""
    return sorted(rounds, key=lambda r: r["p50_us"])[len(rounds) // 2]


def ratio(ours: float, theirs: float | None) -> float | None:
    return None if not theirs else ours / theirs


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as server:
        print(f"redis-server {server.binary} on port {server.port}", file=sys.stderr)
        results: dict[str, Any] = {}
        async with Client.from_url(server.url, client_name="bench") as client:
            # PING latency is the most load-sensitive figure: alternate theirs and ours over a
            # few rounds and keep each side's median round, so a burst of load hits both.
            theirs_rounds: list[dict[str, float]] = []
            ours_rounds: list[dict[str, float]] = []
            raw_rounds: list[dict[str, float]] = []
            for _ in range(args.rounds):
                theirs_rounds.append(theirs_ping(server.port, args.ping_n))
                ours_rounds.append(await ours_ping(client, args.ours_ping_n))
                raw_rounds.append(await raw_trio_ping(server.port, args.ours_ping_n))
            results["theirs_ping"] = median_round(theirs_rounds)
            results["ours_ping"] = median_round(ours_rounds)
            results["raw_trio_ping"] = median_round(raw_rounds)
            results["ping_rounds"] = {
                "theirs": theirs_rounds,
                "ours": ours_rounds,
                "raw_trio": raw_rounds,
            }
            results["theirs_xadd"] = theirs_xadd(server.port, args.xadd_n)
            await client.execute("FLUSHALL")  # our own server: only redis-benchmark's stream
            results["ours_produce"] = await ours_produce(client, args.events)
            results["ours_consume"] = await ours_consume(client, results["ours_produce"]["events"])
    tp, tx = results["theirs_ping"], results["theirs_xadd"]
    op, oprod, ocons = results["ours_ping"], results["ours_produce"], results["ours_consume"]
    ping_ratio = op["p50_us"] / tp["p50_us"] if tp["p50_us"] else None
    results["ratios"] = {
        "produce_vs_redis_benchmark_xadd_P100": ratio(oprod["rps"], tx["rps"]),
        "consume_vs_redis_benchmark_xadd_P100": ratio(ocons["rps"], tx["rps"]),
        "ping_p50_ours_over_theirs": ping_ratio,
        "ping_rps_vs_redis_benchmark": ratio(op["rps"], tp["rps"]),
        "ping_p50_ours_over_raw_trio": ratio(op["p50_us"], results["raw_trio_ping"]["p50_us"]),
        "ping_p50_raw_trio_over_theirs": ratio(results["raw_trio_ping"]["p50_us"], tp["p50_us"]),
    }
    results["targets"] = {
        "produce_at_least_100k_per_s": oprod["rps"] >= TARGET_PRODUCE,
        "ping_p50_within_1_5x": ping_ratio is not None and ping_ratio <= TARGET_PING_RATIO,
    }
    results["environment"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "trio": trio.__version__,
        "events": args.events,
    }
    return results


def print_table(r: dict[str, Any]) -> None:
    tp, tx = r["theirs_ping"], r["theirs_xadd"]
    op, oprod, ocons = r["ours_ping"], r["ours_produce"], r["ours_consume"]
    ping_ratio = r["ratios"]["ping_p50_ours_over_theirs"]
    rows = [
        ("produce XADD, pipelines of 100 (ev/s)", oprod["rps"], tx["rps"],
         ratio(oprod["rps"], tx["rps"]), f">= {TARGET_PRODUCE:,.0f} ev/s",
         r["targets"]["produce_at_least_100k_per_s"]),
        ("consume XREADGROUP 100 + XACK, 16 streams (ev/s)", ocons["rps"], None, None, "", None),
        ("PING p50 (us), one connection", op["p50_us"], tp["p50_us"], ping_ratio,
         f"<= {TARGET_PING_RATIO}x theirs", r["targets"]["ping_p50_within_1_5x"]),
        ("PING p99 (us), one connection", op["p99_us"], tp["p99_us"],
         ratio(op["p99_us"], tp["p99_us"]), "", None),
        ("PING sequential (req/s)", op["rps"], tp["rps"], ratio(op["rps"], tp["rps"]), "", None),
        ("  floor: bare trio+hiredis loop PING p50 (us)", r["raw_trio_ping"]["p50_us"],
         tp["p50_us"], ratio(r["raw_trio_ping"]["p50_us"], tp["p50_us"]), "", None),
        ("  floor: bare trio+hiredis loop PING p99 (us)", r["raw_trio_ping"]["p99_us"],
         tp["p99_us"], ratio(r["raw_trio_ping"]["p99_us"], tp["p99_us"]), "", None),
    ]  # fmt: skip
    header = f"{'measure':<50} {'ours':>12} {'redis-bench':>12} {'ratio':>7}  target"
    print(header)
    print("-" * len(header) + "-" * 12)
    for name, ours, theirs, rat, target, met in rows:
        verdict = "" if met is None else ("  ok" if met else "  MISSED")
        print(
            f"{name:<50} {fmt(ours, ',.1f'):>12} {fmt(theirs, ',.1f'):>12} "
            f"{fmt(rat, '.2f'):>7}  {target}{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--events", type=int, default=200_000, help="events produced/consumed")
    parser.add_argument("--ping-n", type=int, default=50_000, help="redis-benchmark PINGs")
    parser.add_argument("--ours-ping-n", type=int, default=20_000, help="our sequential PINGs")
    parser.add_argument("--rounds", type=int, default=3, help="alternating PING rounds")
    parser.add_argument("--xadd-n", type=int, default=500_000, help="redis-benchmark XADDs")
    args = parser.parse_args()
    results = trio.run(run, args)
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
