"""Events in flight per partition (``ordering="key"`` / ``"none"``), against real Redis.

Handlers append (key, seq, start, end) records; the checks compare what was sent with what was
handled: every event once, a key's events in stream order and never two of a key at once, no
more than ``concurrency`` in flight. No timing goes into pass/fail.
"""

from __future__ import annotations

import contextvars
import random
from typing import Any

import pytest
import trio

from actorstream import ConfigError, LeaseTiming, Record, System, running

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Job(Record):
    key: int
    seq: int


def make(url: str, partitions: int = 2) -> tuple[System, Any]:
    system = System("ord", url, install_signal_handlers=False, lease_timing=FAST)
    return system, system.stream("jobs", record=Job, partitions=partitions, key="key")


def workload(keys: int, per_key: int, seed: int = 7) -> list[Job]:
    """``per_key`` events of each key, keys interleaved at random (seq in sending order)."""
    rng = random.Random(seed)
    order = [k for k in range(keys) for _ in range(per_key)]
    rng.shuffle(order)
    seqs: dict[int, int] = {}
    out = []
    for k in order:
        seqs[k] = seqs.get(k, 0) + 1
        out.append(Job(key=k, seq=seqs[k]))
    return out


async def wait_for(pred: Any, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.01)


class Log:
    """What the handlers did: (key, seq, start, end) per handling, and the peak in flight."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, float, float]] = []
        self.now = 0
        self.peak = 0
        self.running: dict[int, int] = {}
        self.overlaps = 0

    async def handle(self, job: Job, pause: float) -> None:
        if self.running.get(job.key):
            self.overlaps += 1
        self.running[job.key] = self.running.get(job.key, 0) + 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        start = trio.current_time()
        try:
            await trio.sleep(pause)
        finally:
            self.now -= 1
            self.running[job.key] -= 1
        self.records.append((job.key, job.seq, start, trio.current_time()))

    def inversions(self) -> int:
        last: dict[int, int] = {}
        bad = 0
        for key, seq, _, _ in sorted(self.records, key=lambda r: r[2]):
            if seq < last.get(key, 0):
                bad += 1
            last[key] = max(seq, last.get(key, 0))
        return bad


async def test_key_ordering_keeps_each_key_in_order_and_runs_keys_concurrently(
    redis_url: str,
) -> None:
    system, jobs = make(redis_url)
    log = Log()
    rng = random.Random(3)

    @system.actor(jobs, ordering="key", concurrency=16)
    async def work(job: Job) -> None:
        await log.handle(job, rng.random() * 0.004)

    sent = workload(keys=30, per_key=12)
    seen_in_flight = 0
    async with system:
        await jobs.send_many(sent)
        async with running(system) as rt:
            with trio.fail_after(30):
                while len(log.records) < len(sent):
                    parts = rt.statistics().partitions
                    seen_in_flight = max([seen_in_flight, *(p.in_flight for p in parts)])
                    assert all(p.in_flight <= p.concurrency == 16 for p in parts)
                    await trio.sleep(0.002)
            await trio.sleep(0.2)
            parts = rt.statistics().partitions
    assert sorted((k, s) for k, s, _, _ in log.records) == sorted((j.key, j.seq) for j in sent)
    assert log.inversions() == 0
    assert log.overlaps == 0
    assert 1 < log.peak <= 16 * 2  # two partitions, 16 each
    assert sum(p.processed for p in parts) == len(sent)
    assert sum(p.acked for p in parts) == len(sent)
    assert all(p.in_flight == 0 for p in parts)
    assert seen_in_flight > 1  # statistics() shows the events in flight


async def test_key_ordering_mixes_handlers_that_return_at_once_and_ones_that_wait(
    redis_url: str,
) -> None:
    """Handlers that return without suspending run in the reader's task, the others in
    workers: a key's events still start in order, never two at once, each once, all acked; a
    context variable set by a waiting handler is seen by no other event's handler."""
    system, jobs = make(redis_url)
    var: contextvars.ContextVar[int | None] = contextvars.ContextVar("var", default=None)
    started: dict[int, list[int]] = {}
    busy: set[int] = set()
    overlaps = leaked = 0

    @system.actor(jobs, ordering="key", concurrency=8)
    async def work(job: Job) -> None:
        nonlocal overlaps, leaked
        leaked += var.get() is not None
        overlaps += job.key in busy
        started.setdefault(job.key, []).append(job.seq)
        if job.seq % 3:
            return  # at once
        busy.add(job.key)
        token = var.set(job.key)
        try:
            await trio.sleep(0.002)
        finally:
            var.reset(token)
            busy.discard(job.key)

    sent = workload(keys=40, per_key=9)
    async with system:
        await jobs.send_many(sent)
        async with running(system) as rt:
            await wait_for(lambda: sum(map(len, started.values())) >= len(sent))
            await wait_for(lambda: sum(p.acked for p in rt.statistics().partitions) >= len(sent))
            parts = rt.statistics().partitions
    assert started == {k: list(range(1, 10)) for k in range(40)}
    assert overlaps == 0 and leaked == 0
    assert sum(p.processed for p in parts) == sum(p.acked for p in parts) == len(sent)


async def test_none_ordering_handles_everything_within_the_bound(redis_url: str) -> None:
    system, jobs = make(redis_url, partitions=1)
    log = Log()

    @system.actor(jobs, ordering="none", concurrency=8)
    async def work(job: Job) -> None:
        await log.handle(job, 0.002)

    sent = workload(keys=3, per_key=40)
    async with system:
        await jobs.send_many(sent)
        async with running(system):
            await wait_for(lambda: len(log.records) >= len(sent))
    assert sorted((k, s) for k, s, _, _ in log.records) == sorted((j.key, j.seq) for j in sent)
    assert 1 < log.peak <= 8


async def test_a_poison_key_blocks_only_itself(redis_url: str) -> None:
    system, jobs = make(redis_url, partitions=1)
    log = Log()
    POISON = 0

    @system.actor(jobs, ordering="key", concurrency=32)
    async def work(job: Job) -> None:
        if job.key == POISON:
            raise ValueError(f"poison {job.seq}")
        await log.handle(job, 0.001)

    sent = workload(keys=20, per_key=10)
    poison = [j for j in sent if j.key == POISON]
    async with system:
        await jobs.send_many(sent)
        async with running(system) as rt:
            await wait_for(lambda: len(log.records) >= len(sent) - len(poison))
            await wait_for(
                lambda: sum(p.dead_lettered for p in rt.statistics().partitions) == len(poison)
            )
            (part,) = rt.statistics().partitions
    assert log.inversions() == 0 and log.overlaps == 0
    assert part.dead_lettered == len(poison)
    assert part.processed == len(sent) - len(poison)
    assert part.state == "running"


async def test_graceful_stop_drains_and_a_restart_handles_the_rest_once(
    redis_server: Any,
) -> None:
    url = redis_server.url
    sent = workload(keys=50, per_key=8)
    log = Log()
    for round_ in range(2):
        system, jobs = make(url, partitions=1)

        @system.actor(jobs, ordering="key", concurrency=32)
        async def work(job: Job) -> None:
            await log.handle(job, 0.01)

        async with system:
            if round_ == 0:
                await jobs.send_many(sent)
            async with running(system):
                if round_ == 0:
                    await wait_for(lambda: len(log.records) >= 60)
                else:
                    await wait_for(lambda: len(log.records) >= len(sent))
            pending = await system.client().execute("XPENDING", jobs.stream_key(0), "work")
    assert pending[0] == 0
    handled = [(k, s) for k, s, _, _ in log.records]
    assert sorted(handled) == sorted((j.key, j.seq) for j in sent)  # nothing twice (CLEAN)
    assert log.inversions() == 0


async def test_batch_form_with_key_ordering_never_holds_a_key_in_two_batches(
    redis_url: str,
) -> None:
    system, jobs = make(redis_url, partitions=1)
    seen: list[tuple[int, int]] = []
    holding: set[int] = set()
    clashes = 0
    sizes: list[int] = []

    @system.actor(jobs, batch=True, batch_size=10, ordering="key", concurrency=4)
    async def work(batch: list[Job]) -> None:
        nonlocal clashes
        keys = {j.key for j in batch}
        clashes += len(keys & holding)
        holding.update(keys)
        sizes.append(len(batch))
        try:
            await trio.sleep(0.005)
        finally:
            holding.difference_update(keys)
        seen.extend((j.key, j.seq) for j in batch)

    sent = workload(keys=25, per_key=8)
    async with system:
        await jobs.send_many(sent)
        async with running(system):
            await wait_for(lambda: len(seen) >= len(sent))
    assert sorted(seen) == sorted((j.key, j.seq) for j in sent)
    assert clashes == 0
    per_key: dict[int, list[int]] = {}
    for k, s in seen:
        per_key.setdefault(k, []).append(s)
    assert all(v == sorted(v) for v in per_key.values())
    assert max(sizes) <= 10


def test_bad_ordering_and_concurrency_are_refused_with_precise_messages() -> None:
    system = System("cfg", "redis://127.0.0.1:1", install_signal_handlers=False)
    jobs = system.stream("jobs", record=Job, partitions=2, key="key")
    with pytest.raises(ConfigError, match="ordering must be one of 'partition', 'key', 'none'"):
        system.actor(jobs, ordering="keys")
    with pytest.raises(ConfigError, match=r"concurrency must be an integer in 1\.\.10000"):
        system.actor(jobs, ordering="key", concurrency=0)
    with pytest.raises(ConfigError, match="concurrency=8 needs ordering='key'"):
        system.actor(jobs, concurrency=8)

    with pytest.raises(ConfigError, match="actor 'loop': the iterator form"):

        @system.actor(jobs, iterator=True, ordering="key")
        async def loop(events: Any) -> None:
            pass


async def test_key_ordering_with_a_table_counts_each_key_exactly(redis_url: str) -> None:
    system, jobs = make(redis_url)
    counts = system.table("counts", value=int, default=0)
    failed: set[tuple[int, int]] = set()

    @system.actor(jobs, ordering="key", concurrency=16, tables=[counts])
    async def tally(job: Job) -> None:
        before = counts[job.key]
        await trio.sleep(0.001)  # other keys run meanwhile; this key waits its turn
        counts[job.key] = before + 1
        if job.seq == 3 and (job.key, job.seq) not in failed:
            failed.add((job.key, job.seq))
            raise RuntimeError("after writing: nothing of this call may stay")

    sent = workload(keys=12, per_key=15)
    async with system:
        await jobs.send_many(sent)
        async with running(system) as rt:
            await wait_for(
                lambda: sum(p.processed for p in rt.statistics().partitions) >= len(sent)
            )
        assert await counts.snapshot() == {str(k): 15 for k in range(12)}
