"""Starting a worker: the same banner and the same wait for Redis from ``python app.py`` and
``actorstream worker`` (docs/running.md, "Starting and stopping")."""

from __future__ import annotations

import re
import socket
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
    r"^\S+ \S+ actorstream: worker of 'startapp' \(pid \d+\) on (\S+), 1 actor\(s\); "
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
    assert "actorstream: worker of 'startapp' stopped" in worker.output()
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
    assert "authentication failed" in out and "wrong" not in out, out
    assert "waiting for Redis" not in out and "Traceback" not in out, out
