"""The coordinator's guarantees with real worker subprocesses and a real redis-server.

Every test runs ``apps/rebalance_app.py`` workers (fast leases: ttl 3 s, renew 1 s, heartbeat
0.5 s, member timeout 3 s, so T_own = 4 s) while a producer keeps sending, and checks the handled
log: no loss (NL), per-key order of first deliveries (ORD), one worker per (partition, epoch)
(EXC), and ownership: exactly one running owner per partition once settled, sticky moves.
Slow variants live in ``tests/chaos/test_rebalance_chaos.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actorstream import LeaseTiming
from actorstream._core.assignment import Slot, min_moves
from actorstream._transport import Client
from actorstream.testing import RedisServer

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from rebalance_harness import assert_clean, check_log, moved, open_cluster, pid_of

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)
PARTITIONS = 8


def cluster(server: RedisServer, app: str, **env: str) -> Any:
    """A cluster, its lease monitor and a producer (not started) in one nursery."""
    return open_cluster(server, app, PARTITIONS, **env)


def expected_moves(old: dict[int, str], members: set[str]) -> int:
    slots = [Slot("handle", p) for p in range(PARTITIONS)]
    return min_moves(members, slots, {Slot("handle", p): w for p, w in old.items()})



async def test_scale_1_to_3_to_1_under_load(redis_server: RedisServer) -> None:
    """Joins and graceful leaves one at a time under load: one owner each, minimal moves, CLEAN."""
    async with cluster(redis_server, "scale", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 800.0)
        first = c.start_worker()
        owners = await c.settled({first.pid})
        moves_log = []
        # Scale up: 1 -> 2 -> 3, one worker at a time.
        for _ in range(2):
            before_t = trio.current_time()
            w = c.start_worker()
            new_owners = await c.settled()
            members = set(new_owners.values())
            want = expected_moves(owners, members)
            got = moved(owners, new_owners)
            transitions = c.monitor.transitions(before_t)
            moves_log.append((len(members), want, got, transitions))
            assert got == want, f"join of {w.pid}: moved {got}, minimum {want}"
            assert transitions == got, f"a partition bounced: {transitions} transitions"
            owners = new_owners
        # Scale down: SIGTERM (graceful leave) 3 -> 2 -> 1.
        for w in c.workers[:2]:
            before_t = trio.current_time()
            w.terminate()
            with trio.fail_after(15):
                assert await w.wait_exited() == 0, w.output()
            new_owners = await c.settled()
            members = set(new_owners.values())
            want = expected_moves(owners, members)
            got = moved(owners, new_owners)
            transitions = c.monitor.transitions(before_t)
            moves_log.append((len(members), want, got, transitions))
            assert got == want, f"leave of {w.pid}: moved {got}, minimum {want}"
            assert transitions == got
            owners = new_owners
        producer.stop()
        await trio.sleep(0.1)
        entries = await c.wait_handled(producer.sent)
        result = check_log(entries, producer.sent)
    print(f"moves (members, minimum, moved, transitions): {moves_log}; sent {producer.sent}")
    assert_clean(result, max_dupes=0)  # every change was graceful: CLEAN
    assert producer.sent > 1000


async def test_kill_9_mid_batch_reowned_within_t_own(redis_server: RedisServer) -> None:
    """kill -9 one of three workers mid-batch: its partitions are re-owned within T_own."""
    async with cluster(redis_server, "kill9", HANDLE_DELAY="0.002", BATCH_SIZE="20") as (
        c,
        producer,
        nursery,
    ):
        nursery.start_soon(producer.run, 1500.0)
        for _ in range(3):
            c.start_worker()
        owners = await c.settled()
        victim = c.workers[1]
        victim_parts = [p for p, h in owners.items() if pid_of(h) == victim.pid]
        # Mid-batch: wait until the victim is handling events right now.
        base = len([e for e in await c.entries() if e.pid == victim.pid])
        with trio.fail_after(10):
            while len([e for e in await c.entries() if e.pid == victim.pid]) < base + 30:
                await trio.sleep(0.01)
        victim.kill()
        killed_at = trio.current_time()
        survivors = c.live_pids()
        new_owners = await c.settled(survivors)
        owned_at = c.monitor.all_owned_at(survivors, killed_at)
        assert owned_at is not None
        reown = owned_at - killed_at
        producer.stop()
        await trio.sleep(0.1)
        entries = await c.wait_handled(producer.sent)
        result = check_log(entries, producer.sent)
    print(
        f"kill -9: re-owned in {reown:.2f}s (T_own {FAST.t_own():g}s); "
        f"{result.duplicates} duplicates; victim held {victim_parts}"
    )
    assert reown <= FAST.t_own() + 0.5
    # Survivors' partitions did not move (sticky), the victim's were shared out.
    assert all(new_owners[p] == owners[p] for p in owners if p not in victim_parts)
    # Duplicates bounded by the in-flight batch of each of the victim's partitions.
    assert_clean(result, max_dupes=len(victim_parts) * 20)


async def test_sigstop_zombie_is_fenced_and_stops_itself(redis_server: RedisServer) -> None:
    """SIGSTOP past the TTL, SIGCONT: no stale write accepted, no inversion, zombie stops."""
    async with cluster(redis_server, "zombie", HANDLE_DELAY="0.002") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1500.0)
        for _ in range(3):
            c.start_worker()
        owners = await c.settled()
        zombie = c.workers[0]
        zombie_parts = sorted(p for p, h in owners.items() if pid_of(h) == zombie.pid)
        epochs_before = await c.monitor.epochs()
        zombie.pause()
        paused_at = trio.current_time()
        others = c.live_pids() - {zombie.pid}
        # Its partitions go to the others while it sleeps.
        await c.settled(others, timeout=FAST.t_own() + 5)
        reown = (c.monitor.all_owned_at(others, paused_at) or 0) - paused_at
        await trio.sleep(1.0)
        epochs_taken = await c.monitor.epochs()
        zombie.resume()
        # It fences itself, then rejoins cleanly and gets its fair share again.
        with trio.fail_after(10):
            while not [e for e in await c.events("fenced") if pid_of(e["worker"]) == zombie.pid]:
                await trio.sleep(0.05)
        fenced_events = [e["msg"] for e in await c.events("fenced")]
        rejoined = await c.settled()
        assert zombie.running  # it stopped its partitions, not itself...
        assert any(pid_of(h) == zombie.pid for h in rejoined.values())  # ...and rejoined
        producer.stop()
        await trio.sleep(0.1)
        entries = await c.wait_handled(producer.sent)
        result = check_log(entries, producer.sent)
    print(f"zombie: re-owned in {reown:.2f}s; {result.duplicates} duplicates")
    for p in zombie_parts:
        assert epochs_taken[p] > epochs_before[p]
    # The zombie acted under its old epochs only; nothing after the others took over was
    # accepted under a shared epoch, and first deliveries stayed in order.
    stale = [
        e
        for e in entries
        if e.pid == zombie.pid
        and e.partition in zombie_parts
        and e.epoch == epochs_before[e.partition]
    ]
    assert_clean(result, max_dupes=len(zombie_parts) * 20)
    assert stale  # it did handle events before the pause
    print(f"zombie's fence events: {fenced_events}")


async def test_rolling_restart_under_load(redis_server: RedisServer) -> None:
    """Replace every worker of three, one at a time, under load: no loss, no duplicates."""
    async with cluster(redis_server, "rolling", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1000.0)
        for _ in range(3):
            c.start_worker()
        await c.settled()
        for old in list(c.workers):
            old.terminate()
            with trio.fail_after(15):
                assert await old.wait_exited() == 0, old.output()
            c.start_worker()
            await c.settled()
        producer.stop()
        await trio.sleep(0.1)
        entries = await c.wait_handled(producer.sent)
        result = check_log(entries, producer.sent)
    print(
        f"rolling restart: sent {producer.sent}, {result.duplicates} duplicates, "
        f"per pid {result.by_pid}"
    )
    assert_clean(result, max_dupes=0)
    assert len(result.by_pid) == 6


async def test_sigterm_hand_off_between_three_workers(redis_server: RedisServer) -> None:
    """One of three workers leaves mid-processing: leases released at once, zero duplicates."""
    async with cluster(redis_server, "handoff", HANDLE_DELAY="0.003") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1500.0)
        for _ in range(3):
            c.start_worker()
        owners = await c.settled()
        leaving = c.workers[2]
        its_parts = [p for p, h in owners.items() if pid_of(h) == leaving.pid]
        await trio.sleep(0.5)
        leaving.terminate()
        left_at = trio.current_time()
        with trio.fail_after(15):
            assert await leaving.wait_exited() == 0, leaving.output()
        survivors = c.live_pids()
        new_owners = await c.settled(survivors)
        handed_at = c.monitor.all_owned_at(survivors, left_at)
        assert handed_at is not None
        producer.stop()
        await trio.sleep(0.1)
        entries = await c.wait_handled(producer.sent)
        result = check_log(entries, producer.sent)
    print(f"hand-off: {handed_at - left_at:.2f}s for {len(its_parts)} partitions")
    assert_clean(result, max_dupes=0)
    assert all(new_owners[p] == owners[p] for p in owners if p not in its_parts)
    # Released at once, not by expiry: well under the lease TTL.
    assert handed_at - left_at < FAST.ttl


async def test_three_coordinators_started_at_once_converge(redis_server: RedisServer) -> None:
    """Concurrent coordinators racing for the same free leases: one owner each, balanced."""
    async with cluster(redis_server, "race", HANDLE_DELAY="0.001") as (c, producer, _n):
        async with producer.system:
            await producer.send(1000)
        for _ in range(3):
            c.start_worker()
        await c.settled()
        entries = await c.wait_handled(producer.sent)
        result = check_log(entries, producer.sent)
    assert_clean(result, max_dupes=None)


async def test_stale_epoch_is_fenced_by_every_script(redis_server: RedisServer) -> None:
    """The scripts themselves: CAS renew/release, epoch increments, stale side effects FENCED."""
    from actorstream._core.errors import FencedError
    from actorstream._tree import scripts as _scripts

    lease, epoch, stream = "as:{x:s:0}:lease:a", "as:{x:s:0}:epoch:a", "as:{x:s:0}:s"
    async with Client.from_url(redis_server.url) as r:
        await r.execute("XGROUP", "CREATE", stream, "a", "0", "MKSTREAM")
        await r.execute("XADD", stream, "*", "f", "v")
        assert (await r.evalsha(_scripts.ACQUIRE, [lease, epoch], ["w1", 3000]))[0] == 1
        # w1's partition actor arms its read fence: WATCH the epoch, GET confirms it is 1.
        zombie_cm = r.dedicated()
        zombie = await zombie_cm.__aenter__()
        assert (await zombie.pipeline([("WATCH", epoch), ("GET", epoch)]))[1] == b"1"
        # Held: another worker gets 0 and the holder's name.
        assert await r.evalsha(_scripts.ACQUIRE, [lease, epoch], ["w2", 3000]) == [0, b"w1"]
        assert await r.evalsha(_scripts.RENEW, [lease, epoch], ["w2", 1, 3000]) == 0
        assert await r.evalsha(_scripts.RENEW, [lease, epoch], ["w1", 1, 3000]) == 1
        assert await r.evalsha(_scripts.RELEASE, [lease, epoch], ["w1", 0]) == 0
        assert await r.evalsha(_scripts.RELEASE, [lease, epoch], ["w1", 1]) == 1
        assert (await r.evalsha(_scripts.ACQUIRE, [lease, epoch], ["w2", 3000]))[0] == 2
        # w1 (epoch 1) is now a zombie: its armed read transaction aborts, its claim is refused.
        replies = await zombie.pipeline([
            ("MULTI",), ("XREADGROUP", "GROUP", "a", "w1", "COUNT", 10, "STREAMS", stream, ">"),
            ("EXEC",), ("WATCH", epoch), ("GET", epoch),
        ])
        assert replies[2] is None  # EXEC aborted: the epoch changed after the WATCH
        assert replies[4] == b"2"  # and re-arming shows the new epoch: the actor stops
        await zombie_cm.__aexit__(None, None, None)
        with pytest.raises(FencedError):
            await r.evalsha(_scripts.CLAIM, [stream, epoch], ["a", "w1", "1", "0-0", 10])
        assert await r.evalsha(_scripts.RENEW, [lease, epoch], ["w1", 1, 3000]) == 0
        assert await r.execute("XPENDING", stream, "a") == [0, None, None, None]


@pytest.mark.parametrize("pause", [2.8, 4.0])
async def test_lone_worker_paused_past_its_trust_reacquires(
    redis_server: RedisServer, pause: float
) -> None:
    """A lone worker paused past its self-fence deadline (2.8 s: Redis may still hold its
    lease; 4 s: the lease expired) must fence its actors and then own and *run* everything again.
    """
    async with cluster(redis_server, "lone", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 1000.0)
        w = c.start_worker()
        await c.settled()
        for _ in range(2):
            w.pause()
            await trio.sleep(pause)
            w.resume()
            await trio.sleep(0.5)
            await c.settled(timeout=10)
        producer.stop()
        await trio.sleep(0.1)
        entries = await c.wait_handled(producer.sent)
        result = check_log(entries, producer.sent)
    assert_clean(result, max_dupes=None)
