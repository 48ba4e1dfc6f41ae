"""Starting a worker: the same banner and the same wait for Redis from ``python app.py`` and
``actorstream worker`` (docs/running.md, "Starting and stopping")."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actorstream.testing import RedisServer, WorkerProcess

APP = """
import trio
from actorstream import Record, System

system = System("startapp")

class Order(Record):
    order_id: int

orders = system.stream("orders", record=Order, partitions=2, key="order_id")

@system.actor(orders)
async def bill(order: Order) -> None:
    pass

if __name__ == "__main__":
    trio.run(system.start)
"""

ENTRY_POINTS = {
    "python app.py": ("app.py",),
    "actorstream worker": ("-m", "actorstream", "worker", "app:system"),
}
BANNER = re.compile(
    r"^\S+ INFO actorstream: worker of 'startapp' \(pid \d+\) on (\S+), 1 actor\(s\); "
    r"Ctrl-C to stop$", re.MULTILINE,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_output(worker: WorkerProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.output():
        assert worker.running, worker.output()
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.05)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_banner_and_stop_line(entry: str, app_dir: Path, redis_server: RedisServer,
                              worker_process) -> None:  # type: ignore[no-untyped-def]
    worker = worker_process(*ENTRY_POINTS[entry], redis_url=redis_server.url, cwd=app_dir)
    wait_output(worker, "Ctrl-C to stop")
    banners = BANNER.findall(worker.output())
    assert banners == [redis_server.url], worker.output()
    worker.interrupt()
    assert worker.wait(30) == 0, worker.output()
    assert "INFO actorstream [startapp]: worker of 'startapp' stopped" in worker.output()
    assert "waiting for Redis" not in worker.output()


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_waits_for_redis_saying_so_once(entry: str, app_dir: Path,
                                         worker_process) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    worker = worker_process(*ENTRY_POINTS[entry], redis_url=url, cwd=app_dir)
    wait_output(worker, "waiting for Redis at")
    time.sleep(3)  # several attempts, backing off
    out = worker.output()
    assert worker.running, out
    assert out.count("waiting for Redis") == 1, out
    assert f"waiting for Redis at redis://:***@127.0.0.1:{port}/0 (" in out
    assert "hunter2" not in out
    assert "Ctrl-C to stop" not in out
    with RedisServer(port=port, password="hunter2"):
        wait_output(worker, "Ctrl-C to stop")
        assert f"Redis at redis://:***@127.0.0.1:{port}/0 answers" in worker.output()
        worker.interrupt()
        assert worker.wait(30) == 0, worker.output()
    assert "hunter2" not in worker.output()


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_ctrl_c_while_waiting_for_redis(entry: str, app_dir: Path,
                                        worker_process) -> None:  # type: ignore[no-untyped-def]
    worker = worker_process(*ENTRY_POINTS[entry], redis_url=f"redis://127.0.0.1:{free_port()}/0",
                            cwd=app_dir)
    wait_output(worker, "waiting for Redis at")
    worker.interrupt()
    assert worker.wait(15) == 0, worker.output()
    assert "Traceback" not in worker.output()


def test_refused_credentials_end_the_cli_worker_at_once(app_dir: Path,
                                                         worker_process) -> None:  # type: ignore[no-untyped-def]
    with RedisServer(password="right") as server:
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        worker = worker_process(*ENTRY_POINTS["actorstream worker"], redis_url=url, cwd=app_dir)
        assert worker.wait(30) == 3, worker.output()
    out = worker.output()
    assert "refused the credentials of user 'default'" in out and "wrong" not in out, out
    assert "waiting for Redis" not in out and "Traceback" not in out, out


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_two_quick_signals_never_kill_the_worker(entry: str, app_dir: Path,
                                                 redis_server: RedisServer) -> None:
    """Two SIGTERMs 50 ms apart on an idle worker: a drain cut short (130) or one complete
    before the second signal (0), never a death by the signal (143), whatever the moment."""
    codes = []
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, *ENTRY_POINTS[entry]], cwd=app_dir, stderr=subprocess.PIPE,
            text=True, env={"PATH": "/usr/bin:/bin", "ACTORSTREAM_REDIS_URL": redis_server.url},
        )
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert "Ctrl-C to stop" in line, line
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            codes.append(proc.wait(30))
            assert "Traceback" not in proc.stderr.read()
        finally:
            proc.kill()
            proc.wait()
    assert set(codes) <= {0, 130}, codes
