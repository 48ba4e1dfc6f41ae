"""Exactly-once under faults (``pytest -m chaos tests/chaos/test_state_chaos.py``).

The counter of ``state_app.py``: 20,000 inputs over 200 keys, two workers. A checker reads every
input and every output back from Redis and compares: each (key, seq) input appears once (the
producer did not duplicate), each (key, seq) output appears exactly once, each output's count is
its position in its key's sequence plus one, and each counter equals its key's number of inputs.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

import attrs
import pytest
import trio

from actorstream._transport import Client
from actorstream.testing import RedisServer

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _harness import WorkerRun, running  # noqa: E402
from state_app import In, Out  # noqa: E402

pytestmark = pytest.mark.chaos

PARTITIONS = 8
KEYS = 200
PER_KEY = 100
CHUNK = 100
TARGET = "state_app:system"


@attrs.frozen
class Figures:
    inputs: int
    input_dupes: int
    outputs: int
    missing: int
    duplicates: int
    wrong_counts: int
    counters_exact: int
    counters_wrong: int
    seconds: float

    def show(self, name: str, extra: str = "") -> None:
        print(
            f"\n[{name}] inputs={self.inputs} (dupes {self.input_dupes}) outputs={self.outputs} "
            f"missing={self.missing} duplicates={self.duplicates} "
            f"wrong_counts={self.wrong_counts} counters exact={self.counters_exact}/{KEYS} "
            f"(wrong {self.counters_wrong}) seconds={self.seconds:.1f}{extra}",
            flush=True,
        )


class Run(WorkerRun):
    def __init__(self, server: RedisServer, client: Client, app: str) -> None:
        super().__init__(server, client, app, target=TARGET, partitions=PARTITIONS)
        self.inputs = self.system.stream("inputs", record=In, partitions=PARTITIONS, key="key")
        self.outputs = self.system.stream("outputs", record=Out, partitions=4, key="key")
        self.counts = self.system.table("counts", value=int, default=0)

        @self.system.actor(self.inputs, tables=[self.counts])
        async def count(event: In) -> None: ...  # declared for reading the table only

    def chunks(self) -> list[list[In]]:
        order = [In(key, seq) for seq in range(PER_KEY) for key in range(KEYS)]
        return [order[i : i + CHUNK] for i in range(0, len(order), CHUNK)]

    async def send(self, chunk: list[In]) -> None:
        async with self.system:
            await self.inputs.send_many(chunk)

    async def wait_outputs(self, n: int, timeout: float) -> float:
        t0 = trio.current_time()
        with trio.move_on_after(timeout):
            while True:
                total = 0
                for p in range(4):
                    total += int(await self.client.execute("XLEN", self.outputs.stream_key(p)))
                if total >= n:
                    return trio.current_time() - t0
                await trio.sleep(0.25)
        raise AssertionError(f"after {timeout}s: {total}/{n} outputs")

    async def figures(self, seconds: float) -> Figures:
        await trio.sleep(1.0)  # anything still committing lands (or never does)
        ins = await self.read(self.inputs)
        outs = await self.read(self.outputs)
        seen_in = collections.Counter((e.key, e.seq) for e in ins)
        seen_out = collections.Counter((o.key, o.seq) for o in outs)
        expected = {(k, s) for k in range(KEYS) for s in range(PER_KEY)}
        async with self.system:
            table = await self.counts.snapshot()
        per_key = collections.Counter(k for k, _s in seen_in)
        exact = sum(1 for k in range(KEYS) if table.get(str(k)) == per_key[k])
        return Figures(
            inputs=len(ins),
            input_dupes=sum(c - 1 for c in seen_in.values()),
            outputs=len(outs),
            missing=len(expected - set(seen_out)),
            duplicates=sum(c - 1 for c in seen_out.values()),
            wrong_counts=sum(1 for o in outs if o.count != o.seq + 1),
            counters_exact=exact,
            counters_wrong=KEYS - exact,
            seconds=seconds,
        )


def assert_exact(f: Figures) -> None:
    assert f.input_dupes == 0 and f.inputs == KEYS * PER_KEY
    assert (f.missing, f.duplicates, f.wrong_counts, f.counters_wrong) == (0, 0, 0, 0)


@pytest.mark.parametrize("processing", ["exactly_once", "at_least_once"])
async def test_exactly_once_through_worker_and_redis_kills(processing: str) -> None:
    """kill -9 of a worker twice and of Redis (AOF, appendfsync always) once, mid-run.

    ``at_least_once`` for comparison: the same checker then finds duplicate outputs (their
    counts consistent: the table commits with the ack either way)."""
    with RedisServer(appendonly=True, extra_args=["--appendfsync", "always"]) as server:
        async with running(Run, server, "eo-kill") as r:
            env = {"HANDLE_SLEEP": "0.0005", "PROCESSING": processing}
            r.start_worker(**env)
            r.start_worker(**env)
            chunks = r.chunks()
            faults = {40: "worker", 90: "worker", 140: "redis"}
            t0 = trio.current_time()
            for i, chunk in enumerate(chunks):
                fault = faults.get(i)
                if fault == "worker":
                    victim = next(w for w in r.workers if w.running)
                    victim.kill()
                    r.start_worker(**env)
                elif fault == "redis":
                    server.kill()
                    await trio.sleep(0.5)
                    server.restart()
                await r.send(chunk)
                await trio.sleep(0.05)
            seconds = await r.wait_outputs(KEYS * PER_KEY, timeout=120)
            f = await r.figures(trio.current_time() - t0)
            outages = sum(w.output().count("Redis unavailable") for w in r.workers)
            f.show(f"{processing}: kill -9 worker x2, kill -9 redis x1",
                   f" (drained {seconds:.1f}s after the last input; {outages} 'Redis "
                   "unavailable' lines from the workers)")
            await r.stop_all()
    if processing == "exactly_once":
        assert_exact(f)
    else:  # outputs sent at once are repeated with their event, tables still exact
        assert (f.missing, f.wrong_counts, f.counters_wrong) == (0, 0, 0)


async def test_exactly_once_through_a_20s_pause() -> None:
    """A worker paused (SIGSTOP) for 20 s mid-run: its stale commits are all FENCED."""
    with RedisServer() as server:
        async with running(Run, server, "eo-pause") as r:
            # a slower handler: the paused worker holds handled, uncommitted events
            a = r.start_worker(HANDLE_SLEEP="0.004")
            r.start_worker(HANDLE_SLEEP="0.004")
            chunks = r.chunks()
            t0 = trio.current_time()
            paused_at = None
            for i, chunk in enumerate(chunks):
                if i == 50:
                    a.pause()
                    paused_at = trio.current_time()
                await r.send(chunk)
                await trio.sleep(0.05)
            assert paused_at is not None
            await trio.sleep(max(0.0, paused_at + 20.0 - trio.current_time()))
            a.resume()
            await trio.sleep(3.0)  # it wakes, finds its leases gone, and stops touching them
            seconds = await r.wait_outputs(KEYS * PER_KEY, timeout=120)
            f = await r.figures(trio.current_time() - t0)
            log = a.output()
            fenced = log.count(" fenced: FENCED")
            self_fenced = log.count(" fenced: lease of epoch")
            refused = [int(n) for n in re.findall(r"could not ack (\d+) handled event", log)]
            f.show("SIGSTOP 20 s", f" (drained {seconds:.1f}s after the last input; the paused "
                   f"worker, resumed: {fenced} partition(s) FENCED by Redis, {self_fenced} "
                   f"stopped by its own clock first; {len(refused)} stale commit(s) of "
                   f"{sum(refused)} handled events refused; stale commits accepted: "
                   f"{f.duplicates + f.wrong_counts})")
            await r.stop_all()
        assert_exact(f)
