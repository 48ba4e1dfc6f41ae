"""Fault scenarios of docs/scenarios.md not covered elsewhere: 10, 18, 22, 23.

Subprocess scenarios use ``apps/rebalance_app.py`` workers with fast
leases (ttl 3 s, renew 1 s, heartbeat 0.5 s, member timeout 3 s: T_own = 4 s) and the handled
log of ``rebalance_harness``: no loss (NL), per-key order of first deliveries (ORD), one worker
pid per (partition, epoch) (EXC), bounded duplicates (ALO).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from actorstream import LeaseTiming, Record, System, running
from actorstream._core import keys as _keys
from actorstream._transport import Client
from actorstream._tree.partition import FENCE_CHECK_EVERY
from actorstream.testing import RedisServer, WorkerProcess

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from rebalance_harness import (
    Cluster,
    Producer,
    assert_clean,
    check_log,
    finish,
    open_cluster,
    pid_of,
)

APPS = Path(__file__).parent / "apps"

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)
PARTITIONS = 8
BATCH = 20


def cluster(server: RedisServer, app: str, **env: str) -> Any:
    return open_cluster(server, app, PARTITIONS, BATCH_SIZE=str(BATCH), **env)


def process_group_gone(pid: int) -> bool:
    """True when no process is left in the worker's process group (it is a session leader)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- scenario 10: a coordinator crashes mid-rebalance, repeatedly -------------------------------

async def test_kill_9_mid_rebalance_repeatedly(redis_server: RedisServer) -> None:
    """Scenario 10, approximated: nothing can crash only the coordinator from outside, so a whole
    worker (coordinator included) is kill -9'd in the middle of a rebalance, three times in a row:
    a worker joins and, as soon as the first lease moves, either an old owner that is handing
    partitions off (draining/releasing) or the joiner that is acquiring them is killed. After each
    round ownership must settle on exactly the survivors (one running owner per partition, at the
    epoch Redis has); at the end no loss, per-key order, one pid per (partition, epoch).
    """
    rng = random.Random(10)
    rounds = []
    async with cluster(redis_server, "midreb", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 800.0)
        for _ in range(2):
            c.start_worker()
        await c.settled()
        for victim_kind in ("old", "joiner", "old"):
            before = dict(c.monitor.current)
            olds = [w for w in c.workers if w.running]
            joiner = c.start_worker()
            t0 = trio.current_time()
            # Mid-rebalance: the first lease change after the join (a release or a new holder).
            with trio.fail_after(15):
                while c.monitor.current == before:
                    await trio.sleep(0.005)
            changed = sorted(p for p in before if c.monitor.current[p] != before[p])
            victim = joiner if victim_kind == "joiner" else rng.choice(olds)
            victim.kill()
            rounds.append((victim_kind, round(trio.current_time() - t0, 2), changed))
            await c.settled(c.live_pids(), timeout=FAST.t_own() + 10)
        result = await finish(c, producer)
    print(f"kills mid-rebalance (victim, s after join, partitions moving): {rounds}; "
          f"sent {producer.sent}, {result.duplicates} duplicates")
    assert_clean(result, max_dupes=3 * PARTITIONS * BATCH)


# -- scenario 23: Ctrl-C during start-up and during shutdown -------------------------------------


def cli_worker(server: RedisServer, app: str, name: str, **env: str) -> WorkerProcess:
    """``python -m actorstream worker rebalance_app:system``: the real CLI entry point."""
    return WorkerProcess(
        "-m", "actorstream", "worker", "rebalance_app:system",
        redis_url=server.url,
        pythonpath=[APPS],
        env={"APP_NAME": app, "PARTITIONS": str(PARTITIONS), "BATCH_SIZE": str(BATCH), **env},
        name=name,
    )


async def produce(url: str, app: str, n: int) -> Producer:
    producer = Producer(url, app, PARTITIONS)
    async with producer.system:
        await producer.send(n)
    return producer


#: Where our package's files are: a traceback through them is ours, not the interpreter's.
PACKAGE = str(Path(_keys.__file__).parent.parent)

#: Exit codes a Ctrl-C may give: 0 (graceful drain), 130 (the CLI caught KeyboardInterrupt: the
#: signal came before the worker installed its handler), -2 (Python was still starting up and
#: died of the SIGINT, as Python does for an uncaught KeyboardInterrupt).
CTRL_C_CODES = {0, 130, -2}


@pytest.mark.parametrize("when", ["at-exec", "after-import", "after-banner"])
async def test_ctrl_c_during_start_up(redis_server: RedisServer, when: str) -> None:
    """Scenario 23, start-up: SIGINT before the worker acquired anything. It exits with a Ctrl-C
    code (the seconds it took are printed; the bound is only a hang guard, since a loaded machine
    slows the interpreter's start-up), no process of its group is left, and a following worker
    handles everything.
    """
    app = f"sigstart-{when}"
    producer = await produce(redis_server.url, app, 300)
    w = cli_worker(redis_server, app, app).start()
    try:
        if when == "after-import":
            await trio.sleep(0.3)  # interpreter up, importing actorstream
        elif when == "after-banner":
            with trio.fail_after(15):
                await w.wait_for_output("actorstream: worker of")
        w.interrupt()
        t0 = trio.current_time()
        with trio.fail_after(60):
            code = await w.wait_exited()
        took = trio.current_time() - t0
        print(f"SIGINT {when}: exit code {code} after {took:.2f}s")
        if code == 1 and when == "at-exec" and PACKAGE not in w.output():
            # CPython's own start-up: the KeyboardInterrupt came while the interpreter set up
            # (its streams, runpy for ``-m``), before any of our code ran; it then exits with 1
            # ("Fatal Python error: init_sys_streams", "Could not import runpy module").
            assert "KeyboardInterrupt" in w.output(), w.output()
        else:
            assert code in CTRL_C_CODES, w.output()
            assert "Traceback" not in w.output() or code == -2, w.output()
        assert process_group_gone(w.pid)
    finally:
        w.close()
        w.cleanup()
    async with Client.from_url(redis_server.url) as client:
        c = Cluster(redis_server, client, app, PARTITIONS, BATCH_SIZE=str(BATCH))
        try:
            c.start_worker()
            entries = await c.wait_handled(producer.sent, timeout=20)
        finally:
            c.close()
    assert_clean(check_log(entries, producer.sent), max_dupes=0)


async def test_second_ctrl_c_while_draining_exits_at_once(redis_server: RedisServer) -> None:
    """Scenario 23, shutdown: a first SIGINT starts the drain (a slow handler keeps it busy), a
    second one exits at once. No orphan; the next worker handles everything (what was in hand is
    redelivered: duplicates allowed, no loss).
    """
    app = "sigdrain"
    producer = await produce(redis_server.url, app, 200)
    w = cli_worker(redis_server, app, app, HANDLE_DELAY="2.0", SHUTDOWN_GRACE="30").start()
    try:
        async with Client.from_url(redis_server.url) as client:
            with trio.fail_after(15):  # it is handling events (and is 2 s into the next one)
                while not await client.execute("LLEN", f"{app}:handled"):
                    await trio.sleep(0.02)
        w.interrupt()
        await trio.sleep(0.5)
        assert w.running, "the first SIGINT must drain (the event in hand takes 2 s), not exit"
        w.interrupt()
        t0 = trio.current_time()
        with trio.fail_after(10):
            code = await w.wait_exited()
        took = trio.current_time() - t0
        out = w.output()
        print(f"second SIGINT: exit code {code} after {took:.2f}s")
        assert "second signal: exiting now" in out, out
        assert code == 130, out  # a forced exit is not a clean drain: say so, like a shell
        assert process_group_gone(w.pid)
    finally:
        w.close()
        w.cleanup()
    async with Client.from_url(redis_server.url) as client:
        c = Cluster(redis_server, client, app, PARTITIONS, BATCH_SIZE=str(BATCH))
        try:
            c.start_worker()
            entries = await c.wait_handled(producer.sent, timeout=25)
        finally:
            c.close()
    result = check_log(entries, producer.sent)
    print(f"after the forced exit: {result.duplicates} duplicates")
    assert_clean(result, max_dupes=PARTITIONS * BATCH)


# -- scenario 18: an operator runs XGROUP DELCONSUMER / SETID ------------------------------------


class Order(Record):
    order_id: int
    amount: int


async def _wait(pred: object, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.02)


async def _acked(r: Client, stream: str, timeout: float = 10) -> None:
    """Until nothing is pending (an idle partition's acks ride on its next wait, briefly)."""
    with trio.fail_after(timeout):
        while (await r.execute("XPENDING", stream, "bill"))[0]:
            await trio.sleep(0.02)


STREAM = "as:{{{app}:orders:0}}:s"


async def test_operator_delconsumer_on_a_live_worker(redis_server: RedisServer) -> None:
    """Scenario 18, ``XGROUP DELCONSUMER`` of a live worker's consumer, mid-batch.

    Redis deletes the consumer *and its pending entries* (the reply counts them). The worker does
    not notice anything wrong: it finishes the batch in hand, its XACK of those ids is a no-op,
    and its next XREADGROUP re-creates the consumer. So, with no further fault, nothing is lost
    and the partition never restarts. But the delivery record of that batch is gone: had the
    worker crashed (or been kill -9'd) before handling it, nothing would redeliver those entries
    (they are in no pending list and before the group's last-delivered id): DELCONSUMER on a
    live consumer can lose events, by Redis's semantics. The second half shows exactly that with a
    handler failure: the failing event cannot be redelivered (it is in no pending list any more),
    so it is dropped and reported (``redelivery-lost``); the rest of the batch goes on. Operators
    should only DELCONSUMER consumers with no pending entries (``XPENDING``), which actorstream's
    own workers leave behind.
    """
    app = "opdel"
    system = System(app, redis_server.url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order, partitions=1, key="order_id")
    seen: list[int] = []
    gate = trio.Event()
    crash_at: set[int] = set()

    @system.actor(orders, batch_size=10)
    async def bill(order: Order) -> None:
        if order.amount in crash_at:
            crash_at.discard(order.amount)
            raise RuntimeError(f"transient crash on {order.amount}")
        seen.append(order.amount)
        if order.amount in (3, 33):
            await gate.wait()

    stream = STREAM.format(app=app)
    async with running(system) as runtime, Client.from_url(redis_server.url) as r:
        consumer = runtime.worker_id
        async with system:
            await orders.send_many([Order(order_id=0, amount=i) for i in range(20)])
        await _wait(lambda: 3 in seen, 10)
        pending = await r.execute("XPENDING", stream, "bill")
        deleted = await r.execute("XGROUP", "DELCONSUMER", stream, "bill", consumer)
        print(f"pending before DELCONSUMER: {pending[0]}; deleted with the consumer: {deleted}")
        assert deleted == pending[0] > 0  # the in-hand batch's delivery record is gone
        gate.set()
        await _wait(lambda: len(seen) >= 20, 10)
        async with system:
            await orders.send_many([Order(order_id=0, amount=i) for i in range(20, 30)])
        await _wait(lambda: len(seen) >= 30, 10)
        assert seen == list(range(30))  # nothing lost, nothing doubled, in order
        stats = runtime.statistics()
        assert [p.restarts for p in stats.partitions] == [0]
        assert stats.partitions[0].state == "running"
        await _acked(r, stream)
        assert await r.execute("XPENDING", stream, "bill") == [0, None, None, None]

        # The same, but the handler fails on an event of the batch whose record was deleted:
        # its redelivery finds nothing pending; the partition goes on with the batch.
        gate = trio.Event()
        crash_at.add(36)
        async with system:
            await orders.send_many([Order(order_id=0, amount=i) for i in range(30, 60)])
        await _wait(lambda: 33 in seen, 10)
        deleted = await r.execute("XGROUP", "DELCONSUMER", stream, "bill", consumer)
        gate.set()
        await _wait(lambda: 59 in seen, 15)
        stats = runtime.statistics()
    skipped = sorted(set(range(30, 60)) - set(seen))
    print(f"second DELCONSUMER deleted {deleted} pending; after a crash, never handled: {skipped}")
    assert skipped == [36]  # lost, by Redis's semantics; the rest of its batch is handled
    assert stats.partitions[0].restarts == 0 and stats.partitions[0].failed == 1
    assert not stats.supervisor.gave_up


async def test_operator_setid_rewinds_and_skips(redis_server: RedisServer) -> None:
    """Scenario 18, ``XGROUP SETID`` while a worker runs.

    - ``SETID <group> 0``: the group's last-delivered id goes back; the worker simply reads the
      stream again: every event is delivered a second time (duplicates, which is what a rewind
      asks for), first deliveries stay in order, no restart.
    - ``SETID <group> $``: the events not yet read are skipped (what a skip asks for); the ones
      already delivered stay pending and are still handled and acked; later events flow.
    Neither crashes nor escalates anything.
    """
    app = "opsetid"
    system = System(app, redis_server.url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order, partitions=1, key="order_id")
    seen: list[int] = []
    gate = trio.Event()
    gate.set()

    @system.actor(orders, batch_size=5)
    async def bill(order: Order) -> None:
        seen.append(order.amount)
        if order.amount == 102:
            await gate.wait()

    stream = STREAM.format(app=app)
    async with running(system) as runtime, Client.from_url(redis_server.url) as r:
        async with system:
            await orders.send_many([Order(order_id=0, amount=i) for i in range(50)])
        await _wait(lambda: len(seen) >= 50, 10)
        assert await r.execute("XGROUP", "SETID", stream, "bill", "0") == b"OK"
        await _wait(lambda: len(seen) >= 100, 10)
        assert seen == list(range(50)) * 2  # a rewind re-delivers everything, in order

        gate = trio.Event()
        async with system:
            await orders.send_many([Order(order_id=0, amount=i) for i in range(100, 140)])
        await _wait(lambda: 102 in seen, 10)  # the batch 100..104 is in hand, 105.. unread
        assert await r.execute("XGROUP", "SETID", stream, "bill", "$") == b"OK"
        gate.set()
        async with system:
            await orders.send_many([Order(order_id=0, amount=i) for i in range(140, 150)])
        await _wait(lambda: 149 in seen, 10)
        stats = runtime.statistics()
        with trio.move_on_after(5):  # a lost ack stays pending: the assertion below says so
            await _acked(r, stream)
        pending = await r.execute("XPENDING", stream, "bill")
    after = [a for a in seen if a >= 100]
    print(f"after SETID $: handled {after}")
    assert after == [100, 101, 102, 103, 104, *range(140, 150)]
    assert pending[0] == 0
    assert [p.restarts for p in stats.partitions] == [0]
    assert not stats.supervisor.gave_up


# -- scenario 22: a handler hogs the CPU past the lease TTL --------------------------------------


async def test_cpu_hog_handler_self_fences(redis_server: RedisServer) -> None:
    """Scenario 22: a handler blocks its worker's event loop (``time.sleep(6)``, past the 3 s TTL)
    in one of two workers. The per-event timeout cannot help (no checkpoint), so the protection
    is the lease: the peer takes over all partitions with new epochs; when the hog wakes up it
    finds its trust expired, fences its partition actors (a ``fenced`` event) instead of reading
    or acking under its old epochs, and rejoins. No loss, order kept, no (partition, epoch)
    handled by two pids; after waking, the hog worker finishes at most a few events of the batches
    it holds (the fence is checked every ``FENCE_CHECK_EVERY`` events), then stops them.
    """
    hog = APPS / "rebalance_app.py"
    async with cluster(redis_server, "hog", HANDLE_DELAY="0.001") as (c, producer, nursery):
        a = c.start_worker(hog, HOG_SECONDS="6")
        await c.settled()
        b = c.start_worker(hog, HOG_SECONDS="6")
        await c.settled()
        epochs_before = await c.monitor.epochs()
        # The first event handled by either worker (picked by SET NX) blocks that worker for 6 s.
        nursery.start_soon(producer.run, 800.0)
        with trio.fail_after(10):
            while not await c.client.execute("LLEN", "hog:hog"):
                await trio.sleep(0.02)
        raw = (await c.client.execute("LRANGE", "hog:hog", 0, -1))[0].decode()
        hog_pid, hog_part, hog_epoch, hog_seq = map(int, raw.split(":"))
        hogger = a if a.pid == hog_pid else b
        with trio.fail_after(20):
            while not [e for e in await c.events("fenced") if pid_of(e["worker"]) == hog_pid]:
                await trio.sleep(0.05)
        fenced = [e["msg"] for e in await c.events("fenced") if pid_of(e["worker"]) == hog_pid]
        await c.settled(timeout=15)
        assert hogger.running
        result = await finish(c, producer)
        entries = await c.entries()
        epochs_after = await c.monitor.epochs()
    assert epochs_before[hog_part] == hog_epoch < epochs_after[hog_part]
    # The hogged event's log entry is pushed when the worker wakes up. After it, the hog worker
    # reads nothing more under its old epochs (its reads are fenced), but the hot path checks
    # the self-fence deadline only every FENCE_CHECK_EVERY (8) events, so each partition actor
    # may still handle a few events of the batch it holds: observed 1-2 per partition, duplicates
    # of what the peer handles under the new epoch (never first deliveries: no inversion).
    woke = next(
        i for i, e in enumerate(entries) if e.pid == hog_pid and e.seq == hog_seq
    )
    stale: dict[int, list[int]] = {}
    for e in entries[woke + 1 :]:
        if e.pid == hog_pid and e.epoch == epochs_before[e.partition]:
            stale.setdefault(e.partition, []).append(e.seq)
    print(f"hog: pid {hog_pid} p{hog_part} epoch {hog_epoch} seq {hog_seq}; fenced {fenced}; "
          f"{result.duplicates} duplicates; in-hand events finished after waking: {stale}")
    assert all(len(v) < FENCE_CHECK_EVERY for v in stale.values()), stale
    assert_clean(result, max_dupes=PARTITIONS * BATCH)


# -- scenario 19: the wall clock of a worker is stepped -----------------------------------------


async def test_wall_clock_step_on_a_worker_changes_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A worker's wall clock jumps an hour ahead, then an hour back, under load.

    Nothing that decides ownership reads a worker's wall clock: membership expiry is computed on
    the Redis server's clock (TIME in heartbeat.lua), leases expire by PX on the server, and a
    worker trusts its leases on its monotonic clock. So nothing moves, and nothing is handled
    twice or lost. (A regression guard: using time.time() for any of these fails this test.)
    """
    clock = tmp_path / "clock-offset"
    clock.write_text("0")
    async with cluster(redis_server, "clockstep", HANDLE_DELAY="0.001") as (c, producer, nursery):
        nursery.start_soon(producer.run, 400.0)
        c.start_worker(CLOCK_STEP_FILE=str(clock))
        c.start_worker()
        before = await c.settled()
        for offset in ("3600", "-3600", "0"):
            clock.write_text(offset)
            await trio.sleep(2.5)  # more than a renew interval and two heartbeats
            if offset == "3600":
                # The step really happened: that worker's telemetry is stamped an hour ahead.
                keys = await c.client.execute("KEYS", _keys.status_pattern("clockstep"))
                stamps = [
                    json.loads(await c.client.execute("GET", k))["published_at"] for k in keys
                ]
                assert max(stamps) - time.time() > 3000, stamps
        after = await c.settled()
        result = await finish(c, producer)
    assert after == before, "a wall-clock step moved partitions"
    assert_clean(result, max_dupes=0)
