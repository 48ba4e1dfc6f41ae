"""Slow coordinator scenarios (``pytest -m chaos tests/chaos``): longer, repeated, mixed faults.

Same harness as ``tests/integration/test_coordinator.py``: ``rebalance_app.py`` workers with fast
leases (T_own = 4 s), a producer under load, and a handled log checked for loss (NL), order of
first deliveries (ORD), one worker per (partition, epoch) (EXC) and bounded duplicates.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actorstream import LeaseTiming
from actorstream._core.assignment import Slot, min_moves
from actorstream.testing import RedisServer

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "apps"))

from rebalance_harness import assert_clean, moved, open_cluster, pid_of
from rebalance_harness import finish as finish_run

pytestmark = pytest.mark.chaos

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)
PARTITIONS = 16
BATCH = 20


def cluster(server: RedisServer, app: str, **env: str) -> Any:
    return open_cluster(server, app, PARTITIONS, BATCH_SIZE=str(BATCH), **env)


async def finish(c: Any, producer: Any) -> Any:
    return await finish_run(c, producer, timeout=60)


async def test_scale_1_to_5_to_1_twice(redis_server: RedisServer) -> None:
    """Scale up and down twice, one worker at a time, under load: sticky, CLEAN."""
    slots = [Slot("handle", p) for p in range(PARTITIONS)]
    async with cluster(redis_server, "scale5", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1500.0)
        c.start_worker()
        owners = await c.settled()
        for _round in range(2):
            for _ in range(4):
                c.start_worker()
                new = await c.settled()
                want = min_moves(
                    set(new.values()), slots, {Slot("handle", p): w for p, w in owners.items()}
                )
                assert moved(owners, new) == want
                owners = new
            for w in [w for w in c.workers if w.running][:-1]:
                w.terminate()
                with trio.fail_after(20):
                    assert await w.wait_exited() == 0
                new = await c.settled()
                want = min_moves(
                    set(new.values()), slots, {Slot("handle", p): w for p, w in owners.items()}
                )
                assert moved(owners, new) == want
                owners = new
        result = await finish(c, producer)
    assert_clean(result, max_dupes=0)


async def test_rolling_bounce_x5_and_all_at_once_x5(redis_server: RedisServer) -> None:
    """Scenario 3: rolling SIGTERM bounce x5, then everyone at once x5: no loss, CLEAN."""
    async with cluster(redis_server, "bounce", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1500.0)
        for _ in range(3):
            c.start_worker()
        await c.settled()
        for _ in range(5):
            for old in [w for w in c.workers if w.running]:
                old.terminate()
                with trio.fail_after(20):
                    assert await old.wait_exited() == 0
                c.start_worker()
                await c.settled()
        for _ in range(5):
            olds = [w for w in c.workers if w.running]
            for old in olds:
                old.terminate()
            for old in olds:
                with trio.fail_after(20):
                    assert await old.wait_exited() == 0
            for _ in range(3):
                c.start_worker()
            await c.settled()
        result = await finish(c, producer)
    assert_clean(result, max_dupes=0)


async def test_repeated_kill_9_reowned_within_t_own(redis_server: RedisServer) -> None:
    """kill -9 a random worker 6 times under load: each time re-owned within T_own."""
    rng = random.Random(7)
    reowns = []
    max_dupes = 0
    async with cluster(redis_server, "kill9x", HANDLE_DELAY="0.002") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1500.0)
        for _ in range(3):
            c.start_worker()
        owners = await c.settled()
        for _ in range(6):
            victim = rng.choice([w for w in c.workers if w.running])
            max_dupes += BATCH * sum(1 for h in owners.values() if pid_of(h) == victim.pid)
            await trio.sleep(rng.uniform(0.2, 1.0))
            victim.kill()
            t0 = trio.current_time()
            survivors = c.live_pids()
            await c.settled(survivors, timeout=FAST.t_own() + 10)
            at = c.monitor.all_owned_at(survivors, t0)
            assert at is not None
            reowns.append(at - t0)
            c.start_worker()
            owners = await c.settled()
        result = await finish(c, producer)
    print(f"re-own times after kill -9: {[f'{t:.2f}' for t in reowns]} (T_own {FAST.t_own()})")
    assert max(reowns) <= FAST.t_own() + 0.5
    assert_clean(result, max_dupes=max_dupes)


async def test_zombies_repeatedly(redis_server: RedisServer) -> None:
    """SIGSTOP a random worker past its TTL and SIGCONT it, 4 times: fenced, never inverted."""
    rng = random.Random(11)
    async with cluster(redis_server, "zombies", HANDLE_DELAY="0.002") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1500.0)
        for _ in range(3):
            c.start_worker()
        await c.settled()
        for _ in range(4):
            zombie = rng.choice(c.workers)
            zombie.pause()
            await trio.sleep(rng.uniform(FAST.t_own(), FAST.t_own() + 2))
            zombie.resume()
            await c.settled(timeout=15)
        result = await finish(c, producer)
    assert_clean(result, max_dupes=4 * PARTITIONS * BATCH)


@pytest.mark.parametrize("pause", [2.9, 3.2, 5.0])
async def test_paused_around_the_ttl(redis_server: RedisServer, pause: float) -> None:
    """Pauses around the TTL (3 s; renewed every second, trusted for 2.5 s), alone and with a
    peer: always runs again. 2.9 s: past the trust deadline, the lease expired or not depending
    on when it was last renewed; 3.2 s: expired, the peer not yet the owner; 5 s: the peer owns
    it. (A shorter pause past the trust deadline is the 2.9 s case again.)"""
    async with cluster(redis_server, "edge", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1000.0)
        a = c.start_worker()
        await c.settled()
        for _ in range(3):
            a.pause()
            await trio.sleep(pause)
            a.resume()
            await c.settled(timeout=15)
        c.start_worker()
        await c.settled()
        for _ in range(3):
            a.pause()
            await trio.sleep(pause)
            a.resume()
            await c.settled(timeout=15)
        result = await finish(c, producer)
    assert_clean(result, max_dupes=None)
