"""Handler failures are contained at their partition, across worker processes (``nox -s chaos``).

Real worker processes (``actorstream worker containment_app:system``) against a redis-server of
each test's own. The app records every handled event in ``<app>:handled`` (the ground truth)
and counts every failed handler call in ``<app>:failures``; dead letters are read back from
Redis. Each test prints its figures: dead-lettered, lost, duplicates, order inversions, seconds.

The rule under test is in docs/dead-letters.md ("Poison or outage").
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from actorstream._core.deadletter import DeadLetter
from actorstream._transport import Client
from actorstream.testing import RedisServer

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import containment_app as app_module  # noqa: E402 - the app's record and partitioning
from _harness import WorkerRun, running  # noqa: E402
from containment_app import Event  # noqa: E402

pytestmark = pytest.mark.chaos

PARTITIONS = 16
TARGET = "containment_app:system"
MAX_DELIVERIES = 3  # the default


# -- workload ----------------------------------------------------------------------------------


def keys_of_partitions(keys: int = 400) -> dict[int, list[int]]:
    out: dict[int, list[int]] = collections.defaultdict(list)
    for k in range(keys):
        out[app_module.events.partition_of(Event(key=k, seq=0))].append(k)
    return out


def poison_mix(total: int, poison: int, *, poison_partition: int = 3) -> list[Event]:
    """``total`` events over 16 partitions. One partition holds ``2 * poison`` of them:
    every event of its poison key is poison, and each follows a healthy event of another key
    of that partition (interleaved). The rest go round-robin over the other partitions' keys.
    Partitions are interleaved in sending order, so all of them are busy at once."""
    keys = keys_of_partitions()
    bad_key, *good_keys = keys[poison_partition]
    queues: dict[int, list[tuple[int, bool]]] = {}
    queues[poison_partition] = [
        item for i in range(poison) for item in ((good_keys[i % len(good_keys)], False),
                                                 (bad_key, True))
    ]
    others = [p for p in range(PARTITIONS) if p != poison_partition]
    rest = total - 2 * poison
    for p in others:
        n = rest // len(others) + (1 if others.index(p) < rest % len(others) else 0)
        queues[p] = [(keys[p][i % len(keys[p])], False) for i in range(n)]
    out: list[Event] = []
    depth = max(len(q) for q in queues.values())
    for i in range(depth):
        for p in range(PARTITIONS):
            if i < len(queues[p]):
                key, bad = queues[p][i]
                out.append(Event(key=key, seq=len(out), poison=bad))
    return out


# -- harness -----------------------------------------------------------------------------------


@attrs.define
class Figures:
    sent: int
    healthy: int
    dead_lettered: int
    dead_letter_dupes: int
    lost: int
    duplicates: int
    inversions: int
    seconds: float
    pending: int
    extra: dict[str, Any] = attrs.Factory(dict)

    def show(self, name: str) -> None:
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        print(
            f"\n[{name}] sent={self.sent} healthy={self.healthy} "
            f"dead-lettered={self.dead_lettered} (dupes {self.dead_letter_dupes}) "
            f"lost={self.lost} duplicates={self.duplicates} inversions={self.inversions} "
            f"pending={self.pending} seconds={self.seconds:.1f}{extra}",
            flush=True,
        )


class Harness(WorkerRun):
    def __init__(self, server: RedisServer, client: Client, app: str) -> None:
        super().__init__(server, client, app, target=TARGET, partitions=PARTITIONS)
        self.stream = self.system.stream(
            "orders", record=Event, partitions=PARTITIONS, key="key"
        )
        self.sent: list[Event] = []

    async def send(self, events: list[Event]) -> None:
        async with self.system:
            for i in range(0, len(events), 5000):
                await self.stream.send_many(events[i : i + 5000])
        self.sent.extend(events)

    async def cli(self, *args: str, **env: str) -> tuple[int, str, str]:
        """Run the CLI: (exit code, stdout, stderr)."""
        result = await trio.run_process(
            [sys.executable, "-m", "actorstream", *args],
            capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "ACTORSTREAM_REDIS_URL": self.server.url,
                 "PYTHONPATH": str(HERE), **self.env(**env)},
        )
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    async def handled(self) -> list[tuple[int, int, int, int]]:
        raw = await self.client.execute("LRANGE", f"{self.app}:handled", 0, -1)
        return [tuple(int(x) for x in item.decode().split(":")) for item in raw]  # type: ignore[misc]

    async def failures(self) -> dict[int, int]:
        raw = await self.client.execute("HGETALL", f"{self.app}:failures")
        return {int(raw[i]): int(raw[i + 1]) for i in range(0, len(raw), 2)}

    async def dead_letters(self) -> list[tuple[int, Event, DeadLetter]]:
        out = []
        for p in range(PARTITIONS):
            key = f"as:{{{self.app}:orders:{p}}}:dlq"
            for dlq_id, flat in await self.client.execute("XRANGE", key, "-", "+"):
                dl = DeadLetter.parse(dlq_id, flat)
                out.append((p, self.stream.format_decoder(dl.original_flat()), dl))
        return out

    async def wait_done(self, *, dead: int, timeout: float) -> float:
        """Seconds until every event sent was handled or dead-lettered, and at least ``dead``
        were dead-lettered; fails at once if a worker exits."""
        t0 = trio.current_time()
        done = letters = 0
        with trio.move_on_after(timeout):
            while True:
                for w in self.workers:
                    assert w.running, f"{w!r} exited:\n{w.output()[-3000:]}"
                seqs = {e[1] for e in await self.handled()}
                letters = len(await self.dead_letters())
                done = len(seqs) + letters
                if done >= len(self.sent) and letters >= dead:
                    return trio.current_time() - t0
                await trio.sleep(0.2)
        raise AssertionError(
            f"after {timeout}s: {done}/{len(self.sent)} handled or dead-lettered, "
            f"{letters}/{dead} dead-lettered"
        )

    async def figures(self, seconds: float) -> Figures:
        await trio.sleep(0.5)  # the last acks ride on the partitions' next read
        entries = await self.handled()
        healthy = [e for e in self.sent if not e.poison]
        seen: set[int] = set()
        last: dict[int, int] = {}
        inversions = 0
        for key, seq, _pid, _p in entries:
            if seq in seen:
                continue
            seen.add(seq)
            if last.get(key, -1) > seq:
                inversions += 1
            last[key] = max(last.get(key, -1), seq)
        letters = await self.dead_letters()
        dl_seqs = [ev.seq for _, ev, _ in letters]
        return Figures(
            sent=len(self.sent),
            healthy=len(healthy),
            dead_lettered=len(letters),
            dead_letter_dupes=len(dl_seqs) - len(set(dl_seqs)),
            lost=len({e.seq for e in healthy} - seen),
            duplicates=len(entries) - len(seen),
            inversions=inversions,
            seconds=seconds,
            pending=await self.pending(),
        )

    async def pending(self) -> int:
        """Entries delivered but not acked, over every partition (0 once all is settled)."""
        total = 0
        for p in range(PARTITIONS):
            try:
                reply = await self.client.execute(
                    "XPENDING", f"as:{{{self.app}:orders:{p}}}:s", "handle"
                )
            except Exception:  # no group yet: nothing pending
                continue
            total += int(reply[0])
        return total


# -- the scenarios -----------------------------------------------------------------------------


async def test_poison_mix(redis_server: RedisServer) -> None:
    """20,000 events, 16 partitions; 1,000 of one partition's events are poison, interleaved:
    each is dead-lettered once, healthy events are handled in key order, within 60 s, and the
    worker stays up and exits 0 on SIGTERM."""
    events = poison_mix(20_000, 1_000)
    poison = {e.seq for e in events if e.poison}
    async with running(Harness, redis_server, "mix") as h:
        await h.send(events)
        h.start_worker()
        seconds = await h.wait_done(dead=len(poison), timeout=60)
        fig = await h.figures(seconds)
        fig.show("poison mix")
        assert h.workers[0].running
        await h.stop_all(expect=0)
        letters = await h.dead_letters()
    assert {ev.seq for _, ev, _ in letters} == poison
    assert fig.dead_lettered == len(poison) and fig.dead_letter_dupes == 0
    assert {dl.deliveries for _, _, dl in letters} == {MAX_DELIVERIES}
    assert fig.lost == 0 and fig.inversions == 0 and fig.pending == 0


async def test_fleet_survives_a_poison_key(redis_server: RedisServer) -> None:
    """Three workers, a poison key: no worker exits; every poison event dead-lettered once."""
    events = poison_mix(6_000, 300, poison_partition=7)
    poison = {e.seq for e in events if e.poison}
    async with running(Harness, redis_server, "fleet") as h:
        for _ in range(3):
            h.start_worker()
        await trio.sleep(2.0)  # let them share the partitions out, then load them
        await h.send(events)
        seconds = await h.wait_done(dead=len(poison), timeout=90)
        await trio.sleep(1.0)
        fig = await h.figures(seconds)
        fig.extra["workers_running"] = sum(w.running for w in h.workers)
        fig.show("fleet")
        assert all(w.running for w in h.workers)
        await h.stop_all(expect=0)
    assert fig.dead_lettered == len(poison) and fig.dead_letter_dupes == 0
    assert fig.lost == 0 and fig.inversions == 0 and fig.pending == 0


async def test_outage_backs_off_and_recovers(redis_server: RedisServer) -> None:
    """The handler raises ConnectionError for every event for 20 s, then recovers: at most
    one dead letter per partition, everything else handled in order, and `status --json`
    shows backing-off partitions with the error while it lasts."""
    outage_at = time.time() + 8.0
    async with running(Harness, redis_server, "outage") as h:
        h.start_worker(OUTAGE_AT=str(outage_at), OUTAGE_FOR="20")
        seen_backing_off: set[int] = set()
        seen_errors: set[str] = set()
        t0 = trio.current_time()

        async def produce() -> None:
            seq = 0
            keys = keys_of_partitions()
            while time.time() < outage_at + 26:
                batch = [
                    Event(key=keys[p][seq % len(keys[p])], seq=seq * PARTITIONS + p)
                    for p in range(PARTITIONS)
                ]
                await h.send(batch)
                seq += 1
                await trio.sleep(0.05)

        async def watch_status() -> None:
            while time.time() < outage_at + 20:
                if time.time() > outage_at + 3:
                    code, out, err = await h.cli("status", "--json", TARGET)
                    assert code == 0, err
                    doc = json.loads(out)
                    for part in doc["partitions"]:
                        if part["state"] == "backing-off":
                            seen_backing_off.add(part["partition"])
                            seen_errors.add(str(part["last_error"]))
                await trio.sleep(1.0)

        async with h.system, trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(watch_status)
        seconds = await h.wait_done(dead=0, timeout=60)
        fig = await h.figures(trio.current_time() - t0)
        failures = await h.failures()
        letters = await h.dead_letters()
        per_partition = collections.Counter(p for p, _, _ in letters)
        fig.extra.update(
            backing_off_partitions_seen=len(seen_backing_off),
            failed_calls=sum(failures.values()),
            max_dead_letters_per_partition=max(per_partition.values(), default=0),
            seconds_to_drain_after_outage=round(seconds, 1),
        )
        fig.show("outage")
        assert h.workers[0].running
        await h.stop_all(expect=0)
    assert max(per_partition.values(), default=0) <= 1, per_partition
    dead = {ev.seq for _, ev, _ in letters}
    # Everything not dead-lettered was handled, in key order.
    assert fig.lost == len(dead) and fig.inversions == 0 and fig.pending == 0
    assert seen_backing_off, "status --json never showed a backing-off partition"
    assert any("ConnectionError" in e for e in seen_errors), seen_errors
    # No hot loop: each partition holds one event while it waits, retried with backoff.
    assert sum(failures.values()) <= PARTITIONS * 25, sum(failures.values())


def poison_run(run: int) -> list[Event]:
    """One partition: a healthy event, ``run`` poison events in a row, a healthy one."""
    keys = keys_of_partitions()[5]
    events = [Event(key=keys[1], seq=0)]
    events += [Event(key=keys[0], seq=1 + i, poison=True) for i in range(run)]
    events.append(Event(key=keys[1], seq=run + 1))
    return events


async def test_poison_run_never_spins_and_never_kills(redis_server: RedisServer) -> None:
    """50 poison events in a row, nothing succeeding anywhere: indistinguishable from an
    outage, so the partition waits, backing off, with the error visible; the worker stays up."""
    async with running(Harness, redis_server, "run") as h:
        h.start_worker()
        await h.send(poison_run(50))
        with trio.fail_after(30):
            while sum((await h.failures()).values()) < MAX_DELIVERIES + 1:
                await trio.sleep(0.2)
        await trio.sleep(15.0)
        failures = await h.failures()
        code, out, err = await h.cli("status", "--json", TARGET)
        assert code == 0, err
        states = {p["partition"]: p["state"] for p in json.loads(out)["partitions"]}
        fig = await h.figures(15.0)
        fig.extra.update(failed_calls=sum(failures.values()), state=states.get(5))
        fig.show("poison run, unclassified")
        assert h.workers[0].running
        await h.stop_all(expect=0)
    assert sum(failures.values()) <= 30, failures  # a hot loop makes thousands
    assert fig.dead_lettered <= 1
    assert states[5] == "backing-off"


async def test_poison_run_drains_at_once_when_classified(redis_server: RedisServer) -> None:
    """With PoisonError in ``poison_errors``, a run of 1,000 drains: one call each, no retry."""
    events = poison_run(1000)
    async with running(Harness, redis_server, "runfast") as h:
        h.start_worker(CLASSIFY="1")
        await h.send(events)
        seconds = await h.wait_done(dead=1000, timeout=60)
        fig = await h.figures(seconds)
        failures = await h.failures()
        fig.extra["failed_calls"] = sum(failures.values())
        fig.show("poison run, classified")
        await h.stop_all(expect=0)
    assert fig.dead_lettered == 1000 and fig.dead_letter_dupes == 0
    assert set(failures.values()) == {1} and len(failures) == 1000
    assert fig.lost == 0 and fig.inversions == 0


async def test_crash_traceback_on_stderr_and_in_dlq_show(redis_server: RedisServer) -> None:
    """Without -v, a handler crash prints its traceback; `dlq show` prints file and line.
    The first Ctrl-C says the worker drains, a second one forces the exit."""
    async with running(Harness, redis_server, "trace") as h:
        worker = h.start_worker()
        await h.send([Event(key=1, seq=0, poison=True), Event(key=1, seq=1)])
        await h.wait_done(dead=1, timeout=30)
        output = worker.output()
        assert "Traceback (most recent call last)" in output, output
        assert 'containment_app.py", line' in output and "in handle" in output, output
        assert "PoisonError: event 0 of key 1 is poison" in output, output
        [(_p, _ev, dl)] = await h.dead_letters()
        code, shown, err = await h.cli("dlq", "show", TARGET, dl.dlq_id)
        assert code == 0, err
        assert 'containment_app.py", line' in shown and "PoisonError" in shown, shown
        worker.terminate()
        with trio.fail_after(20):
            assert await worker.wait_exited() == 0


async def test_ctrl_c_announces_the_drain_and_a_second_forces_exit(
    redis_server: RedisServer,
) -> None:
    async with running(Harness, redis_server, "ctrlc") as h:
        busy = h.start_worker(HANDLE_SLEEP="60")
        await h.send([Event(key=k, seq=k) for k in range(PARTITIONS * 2)])
        await trio.sleep(3.0)  # handlers are asleep in their events: a drain has to wait
        busy.interrupt()
        with trio.fail_after(10):
            while "drain" not in busy.output().lower():
                await trio.sleep(0.1)
        text = busy.output().lower()
        assert "second" in text or "again" in text, busy.output()
        assert busy.running
        busy.interrupt()
        with trio.fail_after(20):
            assert await busy.wait_exited() == 130
