"""``batch_wait`` with ``ordering="key"`` and ``"none"`` (the lanes' batch workers), against
real Redis.

Events go out in small bursts, a little apart, all within ``batch_wait``: the batches the
handler got must be bigger than any burst (proof that a batch waited to fill, by the sizes
recorded, not by timings), every event handled exactly once and acked, a key's events in
stream order with ``"key"`` (and no key in two batches at once). A stop while a batch fills
ends without waiting ``batch_wait`` out (a hang guard only; the seconds are printed); what
was read and not started is handled once by the next run (with ``"partition"`` the batch in
hand is handled as it is). No timing goes into pass/fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from redis import exceptions as rex

from actorstream import ConfigError, LeaseTiming, Record, System, running

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)
BURST = 6  # events per burst
BURSTS = 3  # bursts per round, BURST_GAP apart: all within BATCH_WAIT
BURST_GAP = 0.06
BATCH_WAIT = 0.3


class Job(Record):
    key: int
    seq: int


def make(url: str) -> tuple[System, Any]:
    system = System("bw", url, install_signal_handlers=False, lease_timing=FAST)
    return system, system.stream("jobs", record=Job, partitions=1, key="key")


def declare_slow_filler(
    system: System, jobs: Any, ordering: str, handled: list[tuple[int, int]]
) -> None:
    """The actor ``load``: batches of up to 50 that wait up to 60 s to fill (longer than
    any test: what ends a wait is a stop or a lost lease)."""

    @system.actor(jobs, batch=True, batch_size=50, batch_wait=60.0, ordering=ordering)
    async def load(batch: list[Job]) -> None:
        handled.extend((j.key, j.seq) for j in batch)


async def pending_count(client: Any, key: str) -> int:
    """Entries pending in the group ``load`` (0 until the worker has made it)."""
    try:
        return int((await client.execute("XPENDING", key, "load"))[0])
    except rex.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return 0


async def wait_for(pred: Any, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.01)


@pytest.mark.parametrize("ordering", ["key", "none"])
async def test_batches_fill_across_bursts_each_event_once_and_keys_in_order(
    redis_url: str, ordering: str
) -> None:
    system, jobs = make(redis_url)
    batches: list[list[tuple[int, int]]] = []
    holding: set[int] = set()
    clashes = 0

    @system.actor(jobs, batch=True, batch_size=50, batch_wait=BATCH_WAIT, ordering=ordering)
    async def load(batch: list[Job]) -> None:
        nonlocal clashes
        keys = {j.key for j in batch}
        clashes += len(keys & holding)
        holding.update(keys)
        batches.append([(j.key, j.seq) for j in batch])
        try:
            await trio.sleep(0.02)
        finally:
            holding.difference_update(keys)

    sent: list[tuple[int, int]] = []
    seqs: dict[int, int] = {}
    async with system:
        async with running(system) as rt:
            for _round in range(3):
                for _ in range(BURSTS):
                    burst = []
                    for i in range(BURST):
                        key = (len(sent) + i) % 4
                        seqs[key] = seqs.get(key, 0) + 1
                        burst.append(Job(key=key, seq=seqs[key]))
                    await jobs.send_many(burst)
                    sent.extend((j.key, j.seq) for j in burst)
                    await trio.sleep(BURST_GAP)
                await wait_for(lambda: sum(map(len, batches)) >= len(sent))
            await wait_for(lambda: sum(p.acked for p in rt.statistics().partitions) >= len(sent))
            (part,) = rt.statistics().partitions
        pending = await system.client().execute("XPENDING", jobs.stream_key(0), "load")
    sizes = [len(b) for b in batches]
    print(f"ordering={ordering}: bursts of {BURST}, batch sizes {sizes}")
    handled = [e for b in batches for e in b]
    assert sorted(handled) == sorted(sent)  # each event once
    assert part.processed == part.acked == len(sent) and pending[0] == 0
    assert max(sizes) > BURST  # a batch waited for the next burst
    assert all(size <= 50 for size in sizes)
    for batch in batches:  # a batch is in stream order
        for key in {k for k, _ in batch}:
            mine = [s for k, s in batch if k == key]
            assert mine == sorted(mine)
    if ordering == "key":
        assert clashes == 0
        per_key: dict[int, list[int]] = {}
        for key, seq in handled:
            per_key.setdefault(key, []).append(seq)
        assert per_key == {k: list(range(1, n + 1)) for k, n in seqs.items()}


@pytest.mark.parametrize("ordering", ["key", "none", "partition"])
async def test_a_stop_while_a_batch_fills_ends_at_once_and_the_next_run_handles_it(
    redis_server: Any, ordering: str
) -> None:
    url = redis_server.url
    handled: list[tuple[int, int]] = []
    sent = [Job(key=k % 2, seq=k) for k in range(3)]
    for round_ in range(2):
        system, jobs = make(url)
        declare_slow_filler(system, jobs, ordering, handled)
        async with system:
            client = system.client()
            key = jobs.stream_key(0)

            async def pending(client: Any = client, key: str = key) -> int:
                return await pending_count(client, key)

            if round_ == 1:
                async with running(system):
                    await wait_for(lambda: len(handled) >= len(sent))
                    with trio.fail_after(30):
                        while await pending():
                            await trio.sleep(0.02)
                continue
            with trio.fail_after(40):  # a hang guard only, far below batch_wait (60 s)
                async with running(system):
                    await jobs.send_many(sent)
                    while await pending() < len(sent):  # read: the batch fills
                        await trio.sleep(0.01)
                    await trio.sleep(0.2)
                    started = trio.current_time()
                # (leaving ``running`` stops the worker gracefully)
            print(f"ordering={ordering}: stopped {trio.current_time() - started:.3f} s "
                  "after the stop request, with a batch filling")
            if ordering == "partition":  # the one batch in hand is handled as it is, acked
                assert sorted(handled) == sorted((j.key, j.seq) for j in sent)
                assert await pending() == 0
            else:  # a batch that fills starts nothing once a stop comes
                assert handled == []
                assert await pending() == len(sent)  # left pending, for the next owner
    assert sorted(handled) == sorted((j.key, j.seq) for j in sent)  # once, over both runs


def test_batch_wait_is_refused_where_no_batch_fills() -> None:
    system = System("cfg", "redis://127.0.0.1:1", install_signal_handlers=False)
    jobs = system.stream("jobs", record=Job, partitions=2, key="key")
    with pytest.raises(ConfigError, match=r"actor .each.: batch_wait=0\.5 applies to the batch"):

        @system.actor(jobs, batch_wait=0.5, ordering="key")
        async def each(job: Job) -> None:
            pass

    with pytest.raises(ConfigError, match="actor 'loop': batch_wait=1 applies to the batch form"):

        @system.actor(jobs, iterator=True, batch_wait=1)
        async def loop(events: Any) -> None:
            pass

    @system.actor(jobs, batch=True, batch_wait=0.5, ordering="none")  # honoured: accepted
    async def load(batch: list[Job]) -> None:
        pass


@pytest.mark.parametrize("ordering", ["key", "none"])
async def test_a_lost_lease_while_a_batch_fills_starts_nothing_and_the_next_owner_handles_it(
    redis_server: Any, ordering: str
) -> None:
    """The epoch moves (another owner) while a batch fills: the filling batch never starts
    under the old epoch; the events are handled once, by the next owner (here: the same
    worker again, from its pending entries)."""
    from actorstream._core.keys import epoch_key

    system, jobs = make(redis_server.url)
    handled: list[tuple[int, int]] = []
    sent = [Job(key=k % 2, seq=k) for k in range(4)]
    declare_slow_filler(system, jobs, ordering, handled)
    async with system:
        client = system.client()
        key = jobs.stream_key(0)
        async with running(system) as worker:
            await jobs.send_many(sent)
            with trio.fail_after(30):
                while await pending_count(client, key) < len(sent):
                    await trio.sleep(0.01)
            await trio.sleep(0.2)
            moved = trio.current_time()
            await client.execute("INCR", epoch_key("bw", "jobs", 0, "load"))
            with trio.fail_after(40):  # a hang guard only, far below batch_wait (60 s)
                await wait_for(lambda: len(handled) >= len(sent))
                while await pending_count(client, key):
                    await trio.sleep(0.02)
            print(f"ordering={ordering}: handled {trio.current_time() - moved:.3f} s after the "
                  "epoch moved, with a batch filling")
            errors = [p.last_error or "" for p in worker.statistics().partitions]
    assert sorted(handled) == sorted((j.key, j.seq) for j in sent)  # once: none before the fence
    assert any("FENCED" in e for e in errors), errors
