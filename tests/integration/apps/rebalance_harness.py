"""Shared machinery of the coordinator tests, chaos tests and the rebalance benchmark.

A ``Cluster`` runs ``rebalance_app.py`` workers against one ``RedisServer``; a ``Producer`` keeps
events flowing while workers come and go; a ``LeaseMonitor`` samples every lease key so moves and
gaps in ownership can be counted afterwards; ``settled()`` waits until ownership has converged
(every lease held by an expected worker, balanced, and every worker's published status running
exactly the partitions it holds at the epoch Redis has); ``check_log()`` checks the handled list
for loss, per-key order of first deliveries and one worker per (partition, epoch).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio
from redis import exceptions as rex

from actorstream import Record, System
from actorstream._core import keys as _keys
from actorstream._streams import SendError
from actorstream._transport import Client
from actorstream.testing import RedisServer, WorkerProcess

APP_SCRIPT = Path(__file__).parent / "rebalance_app.py"
RUNNING_STATES = {
    "starting", "replaying", "running", "draining", "waiting-redis", "backing-off"
}


def pid_of(worker_id: str) -> int:
    """Worker ids are ``<host>-<pid>-<random>``."""
    return int(worker_id.rsplit("-", 2)[1])


@attrs.define
class Entry:
    key: int
    seq: int
    pid: int
    partition: int
    epoch: int


@attrs.define
class LogCheck:
    total: int
    unique: int
    duplicates: int
    missing: set[int]
    inversions: list[tuple[int, int, int]]
    shared_epochs: dict[tuple[int, int], set[int]]
    by_pid: dict[int, int]


def check_log(entries: list[Entry], sent: int) -> LogCheck:
    """Loss, first-delivery order per key, and exclusivity of (partition, epoch)."""
    seen: set[int] = set()
    last: dict[int, int] = {}
    inversions = []
    epochs: dict[tuple[int, int], set[int]] = collections.defaultdict(set)
    by_pid: collections.Counter[int] = collections.Counter()
    for e in entries:
        by_pid[e.pid] += 1
        epochs[(e.partition, e.epoch)].add(e.pid)
        if e.seq in seen:
            continue
        seen.add(e.seq)
        if last.get(e.key, -1) > e.seq:
            inversions.append((e.key, last[e.key], e.seq))
        last[e.key] = max(last.get(e.key, -1), e.seq)
    return LogCheck(
        total=len(entries),
        unique=len(seen),
        duplicates=len(entries) - len(seen),
        missing=set(range(sent)) - seen,
        inversions=inversions,
        shared_epochs={k: v for k, v in epochs.items() if len(v) > 1},
        by_pid=dict(by_pid),
    )


class Order(Record):  # the app's record shape
    key: int
    seq: int


class Producer:
    """Sends ``Order(key=seq % keys, seq)`` in bursts until stopped; ``sent`` counts them."""

    def __init__(self, url: str, app: str, partitions: int, keys: int = 64) -> None:
        self.system = System(app, url)
        self.stream = self.system.stream("orders", record=Order, partitions=partitions, key="key")
        self.keys = keys
        self.sent = 0
        self._stop = trio.Event()

    async def send(self, n: int) -> None:
        events = [Order(key=(self.sent + i) % self.keys, seq=self.sent + i) for i in range(n)]
        await self.stream.send_many(events)
        self.sent += n

    async def run(self, rate: float = 1000.0, burst: int = 20) -> None:
        async with self.system:
            while not self._stop.is_set():
                await self.send(burst)
                with trio.move_on_after(burst / rate):
                    await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


T = TypeVar("T")


async def retrying(fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """Retry a Redis read while the server restarts or fails over (refused, LOADING, moved)."""
    with trio.fail_after(timeout):
        while True:
            try:
                return await fn()
            except Exception:  # any transport error: try again
                await trio.sleep(0.1)


class AckedProducer:
    """Sends ``Order(seq % keys, seq)`` in bursts through faults; never reuses a seq.

    ``acked`` holds the seqs whose XADD returned an id (confirmed), ``unknown`` those whose
    outcome is unknown (the connection broke mid-pipeline: they may or may not be in Redis).
    With ``resend=True`` a burst is sent again, its unconfirmed events only and in order,
    until all of it is confirmed, before anything newer goes out: per-key order in the stream
    holds, and an event sent twice shows up as a duplicate, never as a loss.
    """

    def __init__(
        self, url: str, app: str, partitions: int, keys: int = 64, *, resend: bool = False
    ) -> None:
        self.system = System(app, url)
        self.stream = self.system.stream("orders", record=Order, partitions=partitions, key="key")
        self.keys = keys
        self.resend = resend
        self.next_seq = 0
        self.acked: set[int] = set()
        self.unknown: set[int] = set()
        self.errors = 0
        self.resent = 0
        self._stop = trio.Event()

    async def _send(self, seqs: list[int]) -> list[int]:
        """One attempt; the seqs not confirmed."""
        try:
            with trio.fail_after(10):
                await self.stream.send_many([Order(key=s % self.keys, seq=s) for s in seqs])
            self.acked.update(seqs)
            return []
        except SendError as exc:
            ok = {seqs[i] for i, _ in exc.sent}
        except Exception:  # Redis down, failing over, timed out: outcome unknown
            ok = set()
        self.errors += 1
        self.acked |= ok
        failed = [s for s in seqs if s not in ok]
        self.unknown |= set(failed)
        await trio.sleep(0.1)
        return failed

    async def run(self, rate: float, burst: int = 20) -> None:
        async with self.system:
            while not self._stop.is_set():
                seqs = list(range(self.next_seq, self.next_seq + burst))
                self.next_seq += burst
                failed = await self._send(seqs)
                while self.resend and failed:
                    self.resent += len(failed)
                    failed = await self._send(failed)
                with trio.move_on_after(burst / rate):
                    await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    def partition_of(self, seq: int) -> int:
        return self.stream.partition_of(Order(key=seq % self.keys, seq=seq))


async def stream_seqs(client: Client, app: str, partitions: int) -> set[int]:
    """Every seq in the partition streams (what Redis has, after whatever it lost)."""
    seqs: set[int] = set()
    for p in range(partitions):
        key = _keys.stream_key(app, "orders", p)
        start = "-"
        while True:
            chunk = await client.execute("XRANGE", key, start, "+", "COUNT", 5000)
            if not chunk:
                break
            for _entry_id, fields in chunk:
                doc = dict(zip(fields[::2], fields[1::2], strict=True))
                assert doc[b"f"] == b"json", doc[b"f"]
                seqs.add(json.loads(doc[b"d"])["seq"])
            start = "(" + chunk[-1][0].decode()
    return seqs


class LeaseMonitor:
    """Samples every lease key; ``history[p]`` lists (time, holder) at each change (None = free)."""

    def __init__(self, client: Client, app: str, partitions: int, actor: str = "handle") -> None:
        self.client = client
        self.partitions = partitions
        self.lease_keys = [f"as:{{{app}:orders:{p}}}:lease:{actor}" for p in range(partitions)]
        self.epoch_keys = [f"as:{{{app}:orders:{p}}}:epoch:{actor}" for p in range(partitions)]
        self.history: dict[int, list[tuple[float, str | None]]] = {p: [] for p in range(partitions)}
        self.current: dict[int, str | None] = dict.fromkeys(range(partitions))

    async def sample(self) -> dict[int, str | None]:
        replies = await self.client.pipeline([("GET", k) for k in self.lease_keys])
        now = trio.current_time()
        for p, reply in enumerate(replies):
            holder = None if reply is None else reply.decode()
            if not self.history[p] or self.history[p][-1][1] != holder:
                self.history[p].append((now, holder))
            self.current[p] = holder
        return dict(self.current)

    async def epochs(self) -> dict[int, int]:
        replies = await self.client.pipeline([("GET", k) for k in self.epoch_keys])
        return {p: int(r or 0) for p, r in enumerate(replies)}

    async def run(self, interval: float = 0.02) -> None:
        """Sample until cancelled; a sample lost to a Redis restart or failover is skipped."""
        while True:
            with contextlib.suppress(rex.ConnectionError, rex.TimeoutError):
                await self.sample()
            await trio.sleep(interval)

    def transitions(self, since: float, until: float | None = None) -> int:
        """Changes of holder (ignoring free gaps) between two times: the moves that happened."""
        count = 0
        for changes in self.history.values():
            prev: str | None = None
            for t, holder in changes:
                if holder is None:
                    continue
                if t > since and (until is None or t <= until) and prev not in (None, holder):
                    count += 1
                prev = holder
        return count

    def all_owned_at(self, pids: set[int], after: float) -> float | None:
        """The first time after ``after`` from which every partition was held by one of ``pids``."""
        latest = after
        for changes in self.history.values():
            ok_since: float | None = None
            for t, holder in changes:
                good = holder is not None and pid_of(holder) in pids
                if good and ok_since is None:
                    ok_since = t
                elif not good:
                    ok_since = None
            if ok_since is None:
                return None
            latest = max(latest, ok_since)
        return latest


class Cluster:
    """Workers of ``rebalance_app.py`` on one Redis, with the probes the tests need."""

    def __init__(
        self, server: RedisServer, client: Client, app: str, partitions: int = 8, **env: str
    ) -> None:
        self.server = server
        self.client = client
        self.app = app
        self.partitions = partitions
        self.env = {"APP_NAME": app, "PARTITIONS": str(partitions), **env}
        self.workers: list[WorkerProcess] = []
        self.monitor = LeaseMonitor(client, app, partitions)

    def start_worker(
        self, script: Path | None = None, *, redis_url: str | None = None, **env: str
    ) -> WorkerProcess:
        """Start a worker running ``script`` (default ``rebalance_app.py``) with extra ``env``;
        ``redis_url`` (e.g. a ``FaultProxy``'s) instead of the server's."""
        worker = WorkerProcess(
            str(script or APP_SCRIPT),
            redis_url=redis_url or self.server.url,
            env={**self.env, **env},
            name=f"{self.app}-w{len(self.workers)}",
        )
        self.workers.append(worker.start())
        return worker

    def live_pids(self) -> set[int]:
        return {w.pid for w in self.workers if w.running}

    def close(self, show_output: bool = False) -> None:
        for w in self.workers:
            w.close()
            if show_output:
                print(f"--- output of {w!r} (pid {w.pid}):\n{w.output()[-4000:]}", file=sys.stderr)
            w.cleanup()

    async def entries(self) -> list[Entry]:
        raw = await self.client.execute("LRANGE", f"{self.app}:handled", 0, -1)
        out = []
        for item in raw:
            k, s, pid, p, e = item.decode().split(":")
            out.append(Entry(int(k), int(s), int(pid), int(p), int(e)))
        return out

    async def statuses(self) -> dict[str, dict[str, Any]]:
        keys = await self.client.execute("KEYS", _keys.status_pattern(self.app))
        if not keys:
            return {}
        docs = await self.client.execute("MGET", *keys)
        out = {}
        for key, doc in zip(keys, docs, strict=True):
            if doc is not None:
                out[key.decode().rsplit(":", 1)[1]] = json.loads(doc)
        return out

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Notable events the workers published for `top` (oldest first)."""
        raw = await self.client.execute("LRANGE", _keys.events_key(self.app), 0, -1)
        docs = [json.loads(item) for item in reversed(raw)]
        return [d for d in docs if kind is None or d["kind"] == kind]

    async def members(self) -> list[str]:
        raw = await self.client.execute("ZRANGE", _keys.members_key(self.app), 0, -1)
        return [m.decode() for m in raw]

    async def ownership_problems(self, pids: set[int]) -> list[str]:
        """Why ownership has not converged onto exactly ``pids`` (empty when it has)."""
        problems = []
        holders = await self.monitor.sample()
        epochs = await self.monitor.epochs()
        counts = collections.Counter(pid_of(h) for h in holders.values() if h is not None)
        for p, h in holders.items():
            if h is None:
                problems.append(f"partition {p} has no lease holder")
            elif pid_of(h) not in pids:
                problems.append(f"partition {p} is held by {h}, not one of {sorted(pids)}")
        if set(counts) != pids and len(pids) <= self.partitions:
            problems.append(f"holders {dict(counts)} are not exactly {sorted(pids)}")
        if counts and max(counts.values()) - min(counts.values()) > 1:
            problems.append(f"unbalanced: {dict(counts)}")
        running: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
        for wid, doc in (await self.statuses()).items():
            for part in doc["partitions"]:
                if part["state"] in RUNNING_STATES:
                    running[part["partition"]].append((wid, part["epoch"]))
        for p in range(self.partitions):
            expected = [(holders[p], epochs[p])] if holders[p] is not None else []
            if running[p] != expected:
                problems.append(f"partition {p}: running on {running[p]}, lease {expected}")
        return problems

    async def settled(self, pids: set[int] | None = None, timeout: float = 20.0) -> dict[int, str]:
        """Wait until ownership converged onto ``pids`` (default: the live workers)."""
        want = self.live_pids() if pids is None else pids
        problems: list[str] = []
        with trio.move_on_after(timeout):
            while True:
                problems = await self.ownership_problems(want)
                if not problems:
                    # Twice in a row, a status period apart: not a passing moment.
                    await trio.sleep(0.25)
                    problems = await self.ownership_problems(want)
                    if not problems:
                        return {p: h for p, h in self.monitor.current.items() if h is not None}
                await trio.sleep(0.05)
        raise AssertionError(f"ownership did not settle on {sorted(want)}: {problems}")

    async def wait_handled(self, sent: int, timeout: float = 30.0) -> list[Entry]:
        """Wait until every seq below ``sent`` was handled at least once; the log then."""
        entries: list[Entry] = []
        with trio.move_on_after(timeout):
            while True:
                entries = await self.entries()
                if len({e.seq for e in entries}) >= sent:
                    await trio.sleep(0.3)  # let stragglers (duplicates) land too
                    return await self.entries()
                await trio.sleep(0.1)
        missing = set(range(sent)) - {e.seq for e in entries}
        raise AssertionError(f"{len(missing)} events never handled, e.g. {sorted(missing)[:10]}")


def moved(old: Mapping[int, str], new: Mapping[int, str]) -> int:
    return sum(1 for p in new if old.get(p) != new[p])


def env_flag(name: str, default: str) -> str:
    return os.environ.get(name, default)


@asynccontextmanager
async def open_cluster(
    server: RedisServer, app: str, partitions: int, **env: str
) -> AsyncIterator[tuple[Cluster, Producer, trio.Nursery]]:
    """A cluster, its lease monitor and a producer (not started) in one nursery.

    Worker outputs are printed when the block fails.
    """
    ok = False
    async with Client.from_url(server.url) as client:
        c = Cluster(server, client, app, partitions, **env)
        producer = Producer(server.url, app, partitions)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(c.monitor.run)
                yield c, producer, nursery
                nursery.cancel_scope.cancel()
            ok = True
        finally:
            c.close(show_output=not ok)


def assert_clean(result: LogCheck, *, max_dupes: int | None) -> None:
    """NL, ORD and EXC always; duplicates within ``max_dupes`` unless it is None."""
    assert not result.missing, f"lost {len(result.missing)}: {sorted(result.missing)[:10]}"
    assert not result.inversions, f"order inversions: {result.inversions[:10]}"
    assert not result.shared_epochs, (
        f"(partition, epoch) acted on by two workers: {result.shared_epochs}"
    )
    if max_dupes is not None:
        assert result.duplicates <= max_dupes, f"{result.duplicates} duplicates > {max_dupes}"


async def finish(c: Cluster, producer: Producer, *, timeout: float = 30) -> LogCheck:
    """Stop producing, wait until everything sent was handled, and check the log."""
    producer.stop()
    await trio.sleep(0.1)
    entries = await c.wait_handled(producer.sent, timeout=timeout)
    return check_log(entries, producer.sent)
