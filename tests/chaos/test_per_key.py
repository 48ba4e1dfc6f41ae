"""``ordering="key"`` under faults (``nox -s chaos``): kill -9, SIGSTOP, a poison key.

Real worker processes (``actorstream worker perkey_app:system``) against a redis-server of each
test's own. Handlers append ``key:seq:start:end:pid`` records (``perkey_app``); the checker
compares them with what was sent: every event handled, per-key inversions of first deliveries,
handlings of one key that overlapped in time, duplicates against the in-flight bound. Each test
prints its figures.
"""

from __future__ import annotations

import collections
import itertools
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from actorstream._transport import Client
from actorstream.testing import RedisServer

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _harness import WorkerRun, running  # noqa: E402
from perkey_app import Event  # noqa: E402

pytestmark = pytest.mark.chaos

PARTITIONS = 16
TARGET = "perkey_app:system"
CONCURRENCY = 256
BATCH = 100


def workload(total: int, keys: int, *, poison_key: int | None = None, poison: int = 0,
             seed: int = 17) -> list[Event]:
    """``total`` events over ``keys`` keys in random order (seq = position in the stream);
    with ``poison_key``, ``poison`` of them belong to that key and always fail."""
    rng = random.Random(seed)
    healthy = [k for k in range(keys) if k != poison_key]
    order = [rng.choice(healthy) for _ in range(total - poison)]
    for _ in range(poison):
        order.insert(rng.randrange(len(order) + 1), poison_key)  # type: ignore[arg-type]
    return [Event(key=k, seq=i, poison=k == poison_key) for i, k in enumerate(order)]


@attrs.frozen
class Record_:
    key: int
    seq: int
    start: int
    end: int
    pid: int


@attrs.define
class Check:
    sent: int
    handled: int
    lost: int
    duplicates: int
    inversions: int
    overlaps: int
    overlaps_zombie: int
    seconds: float
    bound: int

    def show(self, name: str, **extra: object) -> None:
        more = "".join(f" {k}={v}" for k, v in extra.items())
        print(
            f"\n[{name}] sent={self.sent} handled={self.handled} lost={self.lost} "
            f"duplicates={self.duplicates} (bound {self.bound}) inversions={self.inversions} "
            f"overlaps={self.overlaps} (by the paused worker's resumed handlers: "
            f"{self.overlaps_zombie}) seconds={self.seconds:.1f}{more}",
            flush=True,
        )


def check(sent: list[Event], records: list[Record_], seconds: float, bound: int,
          zombie: int | None = None) -> Check:
    """The checker over what was produced vs what was handled."""
    healthy = {e.seq for e in sent if not e.poison}
    seen: set[int] = set()
    last: dict[int, int] = {}
    inversions = 0
    for r in records:  # completion order; a key's handlings complete one at a time
        if r.seq in seen:
            continue
        seen.add(r.seq)
        if last.get(r.key, -1) > r.seq:
            inversions += 1
        last[r.key] = max(last.get(r.key, -1), r.seq)
    by_key: dict[int, list[Record_]] = collections.defaultdict(list)
    for r in records:
        by_key[r.key].append(r)
    overlaps = zombie_overlaps = 0
    for rs in by_key.values():
        rs.sort(key=lambda r: r.start)
        for a, b in itertools.pairwise(rs):
            if b.start < a.end:
                overlaps += 1
                if zombie is not None and zombie in (a.pid, b.pid):
                    zombie_overlaps += 1
    return Check(
        sent=len(sent), handled=len(seen), lost=len(healthy - seen),
        duplicates=len(records) - len(seen), inversions=inversions, overlaps=overlaps,
        overlaps_zombie=zombie_overlaps, seconds=seconds, bound=bound,
    )


class Run(WorkerRun):
    def __init__(self, server: RedisServer, client: Client, app: str, **env: str) -> None:
        super().__init__(server, client, app, target=TARGET, partitions=PARTITIONS, **env)
        self.stream = self.system.stream("orders", record=Event, partitions=PARTITIONS,
                                         key="key")

    async def send(self, events: list[Event]) -> None:
        async with self.system:
            for i in range(0, len(events), 5000):
                await self.stream.send_many(events[i : i + 5000])

    async def records(self) -> list[Record_]:
        raw = await self.client.execute("LRANGE", f"{self.app}:handled", 0, -1)
        return [Record_(*(int(x) for x in item.decode().split(":"))) for item in raw]

    async def count(self) -> int:
        return int(await self.client.execute("LLEN", f"{self.app}:handled"))

    async def unique(self) -> int:
        return len({r.seq for r in await self.records()})

    async def dead_letters(self) -> int:
        n = 0
        for p in range(PARTITIONS):
            n += int(await self.client.execute("XLEN", f"as:{{{self.app}:orders:{p}}}:dlq"))
        return n

    async def wait_until(self, what: str, pred: object, timeout: float) -> float:
        t0 = trio.current_time()
        with trio.move_on_after(timeout):
            while not await pred():  # type: ignore[operator]
                await trio.sleep(0.2)
            return trio.current_time() - t0
        raise AssertionError(f"after {timeout}s: not {what}")


@asynccontextmanager
async def run(app: str, **env: str) -> AsyncIterator[Run]:
    with RedisServer() as server:
        async with running(Run, server, app, **env) as r:
            yield r


TOTAL = 30_000
KEYS = 300


async def test_kill_9_of_one_of_two_workers_keeps_per_key_order() -> None:
    sent = workload(TOTAL, KEYS)
    async with run("pk-kill") as r:
        w0, w1 = r.start_worker(), r.start_worker()
        await r.send(sent)
        t0 = trio.current_time()
        await r.wait_until("a third handled", lambda: _at_least(r, TOTAL // 3), 120)
        w0.kill()
        await r.wait_until("all handled", lambda: _at_least_unique(r, TOTAL), 180)
        seconds = trio.current_time() - t0
        assert w1.running, w1.output()[-3000:]
        await trio.sleep(0.5)
        figures = check(sent, await r.records(), seconds, bound=PARTITIONS * (CONCURRENCY + BATCH))
    figures.show("kill -9, ordering=key")
    assert figures.lost == 0
    assert figures.inversions == 0
    assert figures.overlaps == 0
    assert figures.duplicates <= figures.bound


async def test_sigstop_for_20s_keeps_per_key_order() -> None:
    sent = workload(TOTAL, KEYS, seed=23)
    async with run("pk-stop") as r:
        w0, w1 = r.start_worker(), r.start_worker()
        await r.send(sent)
        t0 = trio.current_time()
        await r.wait_until("a third handled", lambda: _at_least(r, TOTAL // 3), 120)
        w0.pause()
        await trio.sleep(20)
        w0.resume()
        await r.wait_until("all handled", lambda: _at_least_unique(r, TOTAL), 180)
        seconds = trio.current_time() - t0
        await trio.sleep(1.0)
        assert w0.running and w1.running
        figures = check(sent, await r.records(), seconds,
                        bound=PARTITIONS * (CONCURRENCY + BATCH), zombie=w0.pid)
    figures.show("SIGSTOP 20 s, ordering=key")
    assert figures.lost == 0
    assert figures.inversions == 0
    # Handlings by the new owner never overlap one another; only a handler that was in flight
    # in the paused worker may finish (after SIGCONT) while the new owner handles its key.
    assert figures.overlaps == figures.overlaps_zombie
    assert figures.duplicates <= figures.bound


async def test_a_poison_key_blocks_only_itself_and_is_dead_lettered() -> None:
    total, poison_key, poison = 5_000, 7, 50
    sent = workload(total, 300, poison_key=poison_key, poison=poison, seed=5)
    async with run("pk-poison") as r:
        w = r.start_worker()
        await r.send(sent)
        t0 = trio.current_time()
        healthy_s = await r.wait_until(
            "every healthy event handled", lambda: _at_least_unique(r, total - poison), 120
        )
        letters_now = await r.dead_letters()
        letters_s = healthy_s + await r.wait_until(
            "50 dead letters", lambda: _dead_at_least(r, poison), 120
        )
        await trio.sleep(1.0)
        assert w.running, w.output()[-3000:]
        figures = check(sent, await r.records(), trio.current_time() - t0, bound=0)
        letters = await r.dead_letters()
    figures.show("poison key among 5,000, ordering=key", dead_letters=letters,
                 dead_letters_when_healthy_done=letters_now,
                 healthy_done_s=f"{healthy_s:.1f}", dead_letters_done_s=f"{letters_s:.1f}")
    assert figures.lost == 0 and figures.inversions == 0 and figures.overlaps == 0
    assert letters == poison


async def _at_least(r: Run, n: int) -> bool:
    return await r.count() >= n


async def _at_least_unique(r: Run, n: int) -> bool:
    return await r.count() >= n and await r.unique() >= n


async def _dead_at_least(r: Run, n: int) -> bool:
    return await r.dead_letters() >= n
