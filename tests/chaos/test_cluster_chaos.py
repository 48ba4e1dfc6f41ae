"""actorstream on a 3-primary Redis Cluster (``pytest -m chaos tests/chaos/test_cluster_chaos.py``).

The coordinator harness (``rebalance_harness``: ``rebalance_app.py`` workers that log every handled
event with its partition and epoch) runs on a ``RedisCluster`` instead of one Redis: ordering at
volume, live resharding of partition slots under load (scenario 28), and kill -9 of a primary
with replica promotion (scenario 29). Each test prints its figures: lost, duplicates, inversions,
seconds to recover.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio
from redis import exceptions as rex

from actorstream import System
from actorstream._core import keys as _keys
from actorstream._streams import SendError
from actorstream._transport import Client, Connection, slot_of
from actorstream.testing import RedisCluster

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "apps"))

from rebalance_harness import Cluster, Order, Producer, assert_clean, check_log

pytestmark = pytest.mark.chaos

PARTITIONS = 16
BATCH = 20


class ClusterRun(Cluster):
    """The harness on a Redis Cluster: statuses are found on every primary (KEYS is per node)."""

    async def statuses(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for node in await self.client.primaries():
            keys = await node.execute("KEYS", _keys.status_pattern(self.app))
            if not keys:
                continue
            docs = await node.execute("MGET", *keys)
            for key, doc in zip(keys, docs, strict=True):
                if doc is not None:
                    out[key.decode().rsplit(":", 1)[1]] = json.loads(doc)
        return out


class TolerantProducer(Producer):
    """Keeps producing through a failover; events Redis did not acknowledge are set aside
    (``unacked``): they may or may not exist, so they count neither as lost nor as sent."""

    def __init__(self, url: str, app: str, partitions: int) -> None:
        super().__init__(url, app, partitions)
        self.unacked: set[int] = set()
        self.failures = 0

    async def send(self, n: int) -> None:
        base = self.sent
        events = [Order(key=(base + i) % self.keys, seq=base + i) for i in range(n)]
        try:
            await self.stream.send_many(events)
        except SendError as exc:
            ok = {i for i, _ in exc.sent}
            self.unacked.update(base + i for i in range(n) if i not in ok)
            self.failures += 1
        except rex.RedisError:
            self.unacked.update(range(base, base + n))
            self.failures += 1
        self.sent += n
        if self.failures and base in self.unacked:
            await trio.sleep(0.05)

    def partition_of(self, seq: int) -> int:
        return self.stream.partition_of(Order(key=seq % self.keys, seq=seq))


async def sample_leases(run: ClusterRun) -> None:
    """The harness's lease monitor, carrying on through a failover (a lost read is skipped)."""
    while True:
        with suppress(rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError):
            await run.monitor.sample()
        await trio.sleep(0.02)


@asynccontextmanager
async def open_run(
    redis: RedisCluster, app: str, **env: str
) -> AsyncIterator[tuple[ClusterRun, TolerantProducer, trio.Nursery]]:
    ok = False
    async with Client.from_url(redis.url, connect_retry_for=5.0) as client:
        run = ClusterRun(redis, client, app, PARTITIONS, BATCH_SIZE=str(BATCH), **env)  # type: ignore[arg-type]
        producer = TolerantProducer(redis.url, app, PARTITIONS)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_leases, run)
                yield run, producer, nursery
                nursery.cancel_scope.cancel()
            ok = True
        finally:
            run.close(show_output=not ok)


def stream_slot(app: str, partition: int) -> int:
    return slot_of(_keys.stream_key(app, "orders", partition))


async def test_ordering_100k_events_16_partitions_2_workers() -> None:
    """Nothing lost, no inversion among first deliveries, on 3 primaries."""
    async with RedisCluster(primaries=3) as redis, open_run(redis, "ord3") as (c, producer, _n):
        owners = {redis.owner_of(stream_slot("ord3", p)).port for p in range(PARTITIONS)}
        assert len(owners) == 3  # the partitions really are spread over the primaries
        c.start_worker()
        c.start_worker()
        await c.settled(timeout=60)
        started = trio.current_time()
        async with producer.system:
            for _ in range(100):
                await producer.send(1000)
        produced = trio.current_time() - started
        entries = await c.wait_handled(producer.sent, timeout=300)
        took = trio.current_time() - started
        assert all(w.running for w in c.workers)
    result = check_log(entries, producer.sent)
    print(
        f"\n3 primaries, 16 partitions, 2 workers: {producer.sent} events produced in "
        f"{produced:.1f}s, all handled {took:.1f}s after the first; lost {len(result.missing)}, "
        f"duplicates {result.duplicates}, inversions {len(result.inversions)}"
    )
    assert_clean(result, max_dupes=0)


async def test_live_resharding_of_two_partitions_under_load() -> None:
    """Scenario 28: the slots of 2 partitions move (keys and all) while events flow."""
    app = "reshard"
    async with RedisCluster(primaries=3) as redis, open_run(
        redis, app, HANDLE_DELAY="0.001"
    ) as (c, producer, nursery):
        nursery.start_soon(producer.run, 1500.0)
        c.start_worker()
        c.start_worker()
        await c.settled(timeout=60)
        moves: list[str] = []
        for partition in (3, 11):
            slot = stream_slot(app, partition)
            source = redis.owner_of(slot)
            target = next(n for n in redis.primaries if n is not source)
            await trio.sleep(1.0)
            migration = await trio.to_thread.run_sync(redis.begin_move, slot, target)
            # Key by key, with events flowing in between: ASK, then MOVED for everyone.
            while await trio.to_thread.run_sync(lambda m=migration: m.migrate(batch=1, limit=1)):
                await trio.sleep(0.2)
            await trio.to_thread.run_sync(migration.finish)
            assert redis.owner_of(slot) is target
            moves.append(f"partition {partition}: slot {slot} :{source.port} -> :{target.port} "
                         f"({migration.moved_keys} keys)")
        await trio.sleep(3.0)
        assert all(w.running for w in c.workers), "a worker exited"
        producer.stop()
        entries = await c.wait_handled(producer.sent - len(producer.unacked), timeout=60)
        moved_events = len(await c.events("fenced")) + len(await c.events("crash"))
        outputs = "".join(w.output() for w in c.workers)
        restarts = outputs.count("WATCH/MULTI state")
        waits = outputs.count("Redis unavailable")
    result = check_log(entries, producer.sent)
    lost = result.missing - producer.unacked
    bound = 2 * BATCH * 4  # two partitions, a batch in flight, a few session restarts each
    print(
        f"\nresharding under load: {'; '.join(moves)}; {producer.sent} events sent "
        f"({len(producer.unacked)} unacknowledged), lost {len(lost)}, duplicates "
        f"{result.duplicates} (bound {bound}), inversions {len(result.inversions)}, "
        f"fenced/crash events {moved_events}; partition sessions restarted by a slot move "
        f"{restarts}, 'Redis unavailable' waits {waits}"
    )
    assert not lost, f"lost {sorted(lost)[:10]}"
    assert not result.inversions, result.inversions[:10]
    assert not result.shared_epochs, result.shared_epochs
    assert result.duplicates <= bound


async def test_primary_kill_9_with_replica_promotion() -> None:
    """Scenario 29: kill -9 a primary under load; its replica is promoted and workers recover
    within 10 s of the promotion; nothing acknowledged after the promotion is lost, and what
    was lost before it is counted."""
    app = "failover"
    async with RedisCluster(primaries=3, replicas=1, node_timeout_ms=1000) as redis, open_run(
        redis, app, HANDLE_DELAY="0.001"
    ) as (c, producer, nursery):
        log_owner = redis.owner_of(slot_of(f"{app}:handled"))  # the test's ground truth stays
        candidates = [n for n in redis.primaries if n is not log_owner]
        victim = max(
            candidates,
            key=lambda n: sum(
                redis.owner_of(stream_slot(app, p)) is n for p in range(PARTITIONS)
            ),
        )
        victim_partitions = {
            p for p in range(PARTITIONS) if redis.owner_of(stream_slot(app, p)) is victim
        }
        replica = redis.replicas_of(victim)[0]
        nursery.start_soon(producer.run, 1000.0)
        c.start_worker()
        c.start_worker()
        await c.settled(timeout=60)
        await trio.sleep(2.0)
        sent_at_kill = producer.sent
        victim.kill()
        killed_at = trio.current_time()
        await trio.to_thread.run_sync(redis.wait_promoted, replica, 30.0)
        promoted_at = trio.current_time()
        sent_at_promotion = producer.sent
        recovered_at: float | None = None
        with trio.move_on_after(30):
            while True:
                entries = await c.entries()
                fresh = {e.partition for e in entries if e.seq >= sent_at_promotion}
                if fresh == set(range(PARTITIONS)):
                    recovered_at = trio.current_time()
                    break
                await trio.sleep(0.1)
        await trio.sleep(2.0)
        assert all(w.running for w in c.workers), "a worker exited"
        producer.stop()
        await trio.sleep(0.2)
        must_have = set(range(sent_at_promotion, producer.sent)) - producer.unacked
        with trio.move_on_after(60):
            while must_have - {e.seq for e in await c.entries()}:
                await trio.sleep(0.2)
        await trio.sleep(0.5)
        entries = await c.entries()
        regressions = await c.events("epoch-regression")
    result = check_log(entries, producer.sent)
    lost = result.missing - producer.unacked
    lost_after = {s for s in lost if s >= sent_at_promotion}
    lost_before = lost - lost_after
    recover = None if recovered_at is None else recovered_at - promoted_at
    print(
        f"\nprimary :{victim.port} (partitions {sorted(victim_partitions)}) killed after "
        f"{sent_at_kill} events; replica promoted {promoted_at - killed_at:.1f}s later; workers "
        f"handled new events on every partition {recover if recover is None else f'{recover:.1f}'}"
        f"s after the promotion. Sent {producer.sent} ({len(producer.unacked)} unacknowledged); "
        f"lost before the promotion {len(lost_before)} (on partitions "
        f"{sorted({producer.partition_of(s) for s in lost_before})}), lost after it "
        f"{len(lost_after)}, duplicates {result.duplicates}, inversions "
        f"{len(result.inversions)}, epoch regressions reported {len(regressions)}, "
        f"(partition, epoch) shared by two workers {len(result.shared_epochs)}"
    )
    assert recover is not None and recover <= 10.0
    assert not lost_after, f"lost after the promotion: {sorted(lost_after)[:10]}"
    assert all(producer.partition_of(s) in victim_partitions for s in lost_before)


class ReplicatedProducer:
    """Confirms an event only once a replica has it too (``WAIT 1`` on the connection that
    wrote it): a primary killed after that cannot take it along. A partition's events that
    failed, or were not replicated in time, are sent again, in order, before anything newer:
    per-key order in the stream holds, and an event sent twice is a duplicate, never a loss.

    (While a slot migrates, ASK-redirected writes are not covered by the ``WAIT``; no primary
    is killed then, so nothing can be lost that way.)
    """

    def __init__(self, url: str, app: str, partitions: int, keys: int = 64) -> None:
        self.system = System(app, url)
        self.stream = self.system.stream("orders", record=Order, partitions=partitions, key="key")
        self.keys = keys
        self.next_seq = 0
        self.confirmed: set[int] = set()
        self.failures = 0
        self.resent = 0
        self._stop = trio.Event()
        self._conns: dict[int, Connection] = {}

    def stop(self) -> None:
        self._stop.set()

    def partition_of(self, seq: int) -> int:
        return self.stream.partition_of(Order(key=seq % self.keys, seq=seq))

    async def _send(self, stack: AsyncExitStack, partition: int, seqs: list[int]) -> bool:
        commands = [self.stream._command(Order(key=s % self.keys, seq=s)) for s in seqs]
        try:
            with trio.fail_after(5):
                conn = self._conns.get(partition)
                if conn is None or conn.broken:
                    conn = self._conns[partition] = await stack.enter_async_context(
                        self.system.client().dedicated(
                            "producer", key=self.stream.stream_key(partition)
                        )
                    )
                replies = await conn.pipeline(
                    [*commands, ("WAIT", 1, 1000), ("INFO", "replication")]
                )
        except Exception:  # a node down, failing over, moved: not confirmed, send again
            return False
        if any(isinstance(r, Exception) for r in replies):
            return False
        # A promoted replica has no replica of its own: then the primary's word is all there is.
        replicas = int(replies[-1].split(b"connected_slaves:")[1].split(b"\r\n")[0])
        return bool(replies[-2] >= min(1, replicas))

    async def _send_until_confirmed(
        self, stack: AsyncExitStack, partition: int, seqs: list[int]
    ) -> None:
        while not await self._send(stack, partition, seqs):
            self.failures += 1
            self.resent += len(seqs)
            await trio.sleep(0.1)
        self.confirmed.update(seqs)

    async def run(self, rate: float, burst: int = 20) -> None:
        async with self.system, AsyncExitStack() as stack:
            while not self._stop.is_set():
                seqs = list(range(self.next_seq, self.next_seq + burst))
                self.next_seq += burst
                by_partition: dict[int, list[int]] = {}
                for seq in seqs:
                    by_partition.setdefault(self.partition_of(seq), []).append(seq)
                # Partitions concurrently, each in order; the next burst after all of them.
                async with trio.open_nursery() as nursery:
                    for partition, group in by_partition.items():
                        nursery.start_soon(self._send_until_confirmed, stack, partition, group)
                with trio.move_on_after(burst / rate):
                    await self._stop.wait()


async def test_resharding_a_third_then_primary_kill_9_with_a_resending_producer() -> None:
    """A third of all slots move live (every third slot to the next primary), then a primary
    is killed and its replica promoted, under load from a producer that resends what was not
    confirmed (replicated): every confirmed event handled, no inversion."""
    app = "reshard3"
    # A node timeout of 2 s, not 1: resharding a third of the slots keeps the nodes busy, and on
    # a loaded machine a 1 s timeout fails a busy primary over in the middle of it.
    async with RedisCluster(primaries=3, replicas=1, node_timeout_ms=2000) as redis, open_run(
        redis, app, HANDLE_DELAY="0.001"
    ) as (c, _unused, nursery):
        producer = ReplicatedProducer(redis.url, app, PARTITIONS)
        c.start_worker()
        c.start_worker()
        await c.settled(timeout=60)
        nursery.start_soon(producer.run, 300.0)
        await trio.sleep(2.0)
        primaries = sorted(redis.primaries, key=lambda n: n.port)
        moves: dict[int, list[int]] = {}  # target port -> slots
        for i, node in enumerate(primaries):
            target = primaries[(i + 1) % len(primaries)]
            for entry in node.call("CLUSTER", "SLOTS"):
                lo, hi, owner = int(entry[0]), int(entry[1]), int(entry[2][1])
                if owner == node.port:
                    moves.setdefault(target.port, []).extend(
                        s for s in range(lo, hi + 1) if s % 3 == 0
                    )
        moved_partitions = [p for p in range(PARTITIONS) if stream_slot(app, p) % 3 == 0]
        started = trio.current_time()
        keys_moved = 0
        for port, slots in moves.items():
            for i in range(0, len(slots), 700):  # in steps, events flowing in between
                keys_moved += await trio.to_thread.run_sync(
                    redis.move_slots, slots[i : i + 700], redis.node(port)
                )
                await trio.sleep(0.2)
        reshard_seconds = trio.current_time() - started
        await trio.to_thread.run_sync(redis.wait_ok)
        await trio.sleep(2.0)

        log_owner = redis.owner_of(slot_of(f"{app}:handled"))  # the test's ground truth stays
        candidates = [n for n in redis.primaries if n not in (log_owner, redis.nodes[0])]
        victim = max(
            candidates,
            key=lambda n: sum(redis.owner_of(stream_slot(app, p)) is n for p in range(PARTITIONS)),
        )
        victim_partitions = sorted(
            p for p in range(PARTITIONS) if redis.owner_of(stream_slot(app, p)) is victim
        )
        replica = redis.replicas_of(victim)[0]
        victim.kill()
        killed_at = trio.current_time()
        await trio.to_thread.run_sync(redis.wait_promoted, replica, 30.0)
        promoted_at = trio.current_time()
        sent_at_promotion = producer.next_seq
        recovered_at: float | None = None
        with trio.move_on_after(30):
            while recovered_at is None:
                entries = await c.entries()
                fresh = {e.partition for e in entries if e.seq >= sent_at_promotion}
                if fresh == set(range(PARTITIONS)):
                    recovered_at = trio.current_time()
                await trio.sleep(0.1)
        await trio.sleep(2.0)
        assert all(w.running for w in c.workers), "a worker exited"
        producer.stop()
        await trio.sleep(0.3)
        confirmed = set(producer.confirmed)
        with trio.move_on_after(60):
            while confirmed - {e.seq for e in await c.entries()}:
                await trio.sleep(0.2)
        await trio.sleep(0.5)
        entries = await c.entries()
        regressions = await c.events("epoch-regression")
    result = check_log(entries, 0)
    missing = confirmed - {e.seq for e in entries}
    recover = None if recovered_at is None else recovered_at - promoted_at
    print(
        f"\nresharding a third of the slots ({sum(len(s) for s in moves.values())} slots, "
        f"{keys_moved} keys, partitions {moved_partitions}) under load took "
        f"{reshard_seconds:.1f}s; then primary :{victim.port} (partitions {victim_partitions}) "
        f"killed, replica promoted {promoted_at - killed_at:.1f}s later, every partition "
        f"handling new events {'-' if recover is None else f'{recover:.1f}'}s after that. "
        f"Sent {producer.next_seq} ({len(confirmed)} confirmed, {producer.resent} resent after "
        f"{producer.failures} failures); handled {result.unique} ({result.total} with "
        f"duplicates), confirmed but not handled {len(missing)}, duplicates "
        f"{result.duplicates}, inversions {len(result.inversions)}, epoch regressions "
        f"reported {len(regressions)}, (partition, epoch) shared by two workers "
        f"{len(result.shared_epochs)}"
    )
    assert not missing, f"confirmed, never handled: {sorted(missing)[:10]}"
    assert not result.inversions, result.inversions[:10]
    assert recover is not None
