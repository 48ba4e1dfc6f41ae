"""`top` against a real worker: a status snapshot rendered per panel, and a real terminal (tmux)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import trio
from rich.console import Console

from actorstream._core import keys as _keys
from actorstream._top import (
    LayoutEntry,
    Poller,
    render_coordinator,
    render_partitions,
    render_streams,
    render_workers,
)
from actorstream._transport import Client
from actorstream.testing import RedisServer

APP = textwrap.dedent(
    """
    from actorstream import Record, System

    system = System("toptest", telemetry_interval=0.2)

    class Job(Record):
        job_id: int
        poison: bool = False

    jobs = system.stream("jobs", record=Job, partitions=4, key="job_id")

    @system.actor(jobs, max_deliveries=1, batch_size=1)
    async def run(job: Job) -> None:
        if job.poison:
            raise ValueError(f"job {job.job_id} is poison")
    """
)
N_JOBS = 40
POISON = (7, 21)


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorstream", *args], capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin", "ACTORSTREAM_REDIS_URL": url},
    )


@pytest.fixture
def settled_app(tmp_path: Path, redis_server: RedisServer, worker_process):  # type: ignore[no-untyped-def]
    """A worker that has processed N_JOBS jobs, two of them dead-lettered; nothing moves."""
    app = tmp_path / "topapp.py"
    app.write_text(APP)
    worker = worker_process("-m", "actorstream", "worker", f"{app}:system",
                            redis_url=redis_server.url)
    events = tmp_path / "jobs.jsonl"
    events.write_text("".join(
        json.dumps({"job_id": i, "poison": i in POISON}) + "\n" for i in range(N_JOBS)
    ))
    sent = cli("send", f"{app}:jobs", "--file", str(events), url=redis_server.url)
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 30
    while True:
        status = cli("status", "--json", f"{app}:system", url=redis_server.url)
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        parts = doc["partitions"]
        done = (
            sum(p["processed"] or 0 for p in parts) == N_JOBS - len(POISON)
            and sum(p["dead_letters"] for p in parts) == len(POISON)
            and all(p["lag"] == 0 and p["pending"] == 0 and p["state"] == "running"
                    for p in parts)
        )
        if done:
            break
        assert worker.running, worker.output()
        assert time.monotonic() < deadline, status.stdout
        time.sleep(0.3)
    return app, redis_server, doc


def redis_cli(redis: RedisServer, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(redis.port), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_panels_from_a_real_snapshot(settled_app) -> None:  # type: ignore[no-untyped-def]
    _app, redis, _doc = settled_app

    async def poll():  # type: ignore[no-untyped-def]
        async with Client.from_url(redis.url) as client:
            poller = Poller(client, "toptest", [LayoutEntry("run", "jobs", 4)])
            await poller.poll()
            await trio.sleep(0.3)
            snap = await poller.poll()
            return snap, poller.pipelines

    snap, pipelines = trio.run(poll)
    assert pipelines == 3  # the first refresh learns the members, then one pipeline each

    def text(renderable: object) -> str:
        console = Console(record=True, width=80, color_system=None)
        console.print(renderable)
        return console.export_text()

    streams = text(render_streams(snap))
    row = next(ln for ln in streams.splitlines() if ln.startswith("jobs"))
    # STREAM PARTS APPENDED/S PROCESSED/S LENGTH LAG PENDING DEAD
    cols = row.split()
    assert cols[0:2] == ["jobs", "4"]
    assert cols[4:] == [str(N_JOBS), "0", "0", str(len(POISON))]
    workers = text(render_workers(snap))
    name = snap.worker_names()[snap.workers[0].worker_id]
    assert workers.splitlines()[2].startswith(f"{name} ")  # one name per worker everywhere
    assert snap.workers[0].worker_id.startswith(name)
    assert " 4 " in workers  # partitions
    partitions = text(render_partitions(snap))
    rows = [ln.split() for ln in partitions.splitlines() if ln.startswith("run[")]
    assert len(rows) == 4
    for p, row in enumerate(rows):
        epoch = redis_cli(redis, "GET", f"as:{{toptest:jobs:{p}}}:epoch:run")
        dlq = redis_cli(redis, "XLEN", f"as:{{toptest:jobs:{p}}}:dlq")
        assert row[2] == epoch
        assert row[3] == "running"
        assert row[4:6] == ["0", "0"]  # lag, pending
        assert row[-1] == dlq
    coordinator = text(render_coordinator(snap))
    assert "unowned 0" in coordinator and "members 1" in coordinator


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_top_in_a_real_terminal(settled_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _app, redis, _doc = settled_app
    session = f"astop-{uuid.uuid4().hex[:8]}"
    socket = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", socket]
    command = (
        f"ACTORSTREAM_REDIS_URL={redis.url} {sys.executable} -m actorstream top "
        f"--interval 0.3 toptest"
    )
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    command], check=True)
    try:
        deadline = time.monotonic() + 20
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout
            if "run[3]" in screen and "RATE/S" in screen:
                break
            time.sleep(0.2)
        lines = screen.splitlines()
        assert "run[3]" in screen, screen
        assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
        jobs = next(ln for ln in lines if ln.startswith("jobs")).split()
        assert jobs[4:] == [str(N_JOBS), "0", "0", str(len(POISON))]
        for p in range(4):
            row = next(ln for ln in lines if ln.startswith(f"run[{p}]")).split()
            assert row[2] == redis_cli(redis, "GET", f"as:{{toptest:jobs:{p}}}:epoch:run")
            assert row[3] == "running"
            assert row[-1] == redis_cli(redis, "XLEN", f"as:{{toptest:jobs:{p}}}:dlq")
        assert "dead-letter" in screen  # the event log
        # Keyboard: f filters to problems (only partitions with dead letters remain).
        subprocess.run([*tmux, "send-keys", "-t", session, "f"], check=True)
        time.sleep(0.8)
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", session],
                                capture_output=True, text=True).stdout
        assert "partitions (problems)" in screen, screen
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = subprocess.run([*tmux, "has-session", "-t", session],
                                   capture_output=True).returncode == 0
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, "top did not quit on q"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_top_once_without_a_worker_reads_the_streams_from_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """No live worker, yet the stream table shows the streams and lengths."""
    app = tmp_path / "topapp.py"
    app.write_text(APP)
    events = tmp_path / "jobs.jsonl"
    events.write_text("".join(json.dumps({"job_id": i}) + "\n" for i in range(13)))
    sent = cli("send", f"{app}:jobs", "--file", str(events), url=redis_server.url)
    assert sent.returncode == 0, sent.stderr
    # Consumer groups exist once a worker ran; without them top still finds the streams.
    out = cli("top", "--once", "--interval", "0.1", "toptest", url=redis_server.url)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout, out.stdout
    row = next(ln for ln in out.stdout.splitlines() if ln.startswith("jobs")).split()
    assert row[:2] == ["jobs", "4"] and row[4] == "13", out.stdout
    assert "no live workers" in out.stdout
    assert "no actor reads these streams yet" in out.stdout
    redis_cli(redis_server, "XGROUP", "CREATE", "as:{toptest:jobs:0}:s", "run", "0")
    out = cli("top", "--once", "--interval", "0.1", "toptest", url=redis_server.url)
    assert "…" not in out.stdout, out.stdout
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("run[")]
    assert len(rows) == 4 and all(r[3] == "unowned" for r in rows), out.stdout
    status = cli("status", "toptest", url=redis_server.url)
    assert status.returncode == 0, status.stderr
    assert "actorstream top" not in status.stdout
    assert all(ln == ln.rstrip() for ln in status.stdout.splitlines())
    assert "jobs" in status.stdout and "run[3]" in status.stdout


def test_a_graceful_stop_publishes_released_and_left_events(
    tmp_path: Path, redis_server: RedisServer, worker_process
) -> None:  # type: ignore[no-untyped-def]
    """Events say which worker they came from, and a stop is visible."""
    app = tmp_path / "topapp.py"
    app.write_text(APP)
    worker = worker_process("-m", "actorstream", "worker", f"{app}:system",
                            redis_url=redis_server.url)
    deadline = time.monotonic() + 30
    events = _keys.events_key("toptest")
    while "acquired" not in redis_cli(redis_server, "LRANGE", events, "0", "-1"):
        assert worker.running and time.monotonic() < deadline, worker.output()
        time.sleep(0.1)
    worker.interrupt()
    assert worker.wait(30) == 0, worker.output()
    raw = redis_cli(redis_server, "LRANGE", events, "0", "-1").splitlines()
    events = [json.loads(line) for line in raw]
    kinds = [e["kind"] for e in events]
    assert "released" in kinds and "left" in kinds, events
    workers = {e["worker"] for e in events}
    assert len(workers) == 1 and workers.pop().split("-")[-2].isdigit()
