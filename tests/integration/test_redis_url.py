"""The one Redis URL rule (docs/redis-url.md), checked at every entry point.

``--url`` (commands that have it), else the ``redis_url`` given to ``System`` in code, else
``$ACTORSTREAM_REDIS_URL``, else ``redis://127.0.0.1:6379/0``. Each case points the losing
sources at a port nothing listens on, so a command that picked the wrong one fails with exit 3.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from actorstream import System
from actorstream.testing import RedisServer, WorkerProcess

DEAD = "redis://127.0.0.1:1/0"

APP = """
from actorstream import Record, System

system = System("urlapp"{url_arg})

class Order(Record):
    order_id: int
    amount: int

orders = system.stream("orders", record=Order, partitions=2, key="order_id")

@system.actor(orders)
async def bill(order: Order) -> None:
    print("handled", order.order_id, flush=True)

if __name__ == "__main__":
    import trio
    trio.run(system.start)
"""


def write_app(tmp_path: Path, code_url: str | None) -> Path:
    path = tmp_path / "urlapp.py"
    path.write_text(APP.format(url_arg="" if code_url is None else f", redis_url={code_url!r}"))
    return path


def run_cli(*args: str, env_url: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_url is not None:
        env["ACTORSTREAM_REDIS_URL"] = env_url
    return subprocess.run(
        [sys.executable, "-m", "actorstream", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=cwd,
    )


# -- code ---------------------------------------------------------------------------------------


def test_code_given_url_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORSTREAM_REDIS_URL", "redis://env-host:6379/0")
    assert System("a", redis_url="redis://code-host:6379/0").redis_url == (
        "redis://code-host:6379/0"
    )
    assert System("b").redis_url == "redis://env-host:6379/0"
    monkeypatch.delenv("ACTORSTREAM_REDIS_URL")
    assert System("c").redis_url == "redis://127.0.0.1:6379/0"
    # An empty variable counts as unset (a shell's `export ACTORSTREAM_REDIS_URL=`).
    monkeypatch.setenv("ACTORSTREAM_REDIS_URL", "")
    assert System("d").redis_url == "redis://127.0.0.1:6379/0"


# -- one-shot commands --------------------------------------------------------------------------

COMMANDS = {
    "send": ("send", "urlapp:orders", '{"order_id": 1, "amount": 2}'),
    "status": ("status", "urlapp:system"),
    "top": ("top", "--once", "urlapp:system"),
    "dlq": ("dlq", "counts", "urlapp:system"),
}

# (code URL, environment URL, --url): which source must win. "good" is the test server.
CASES = {
    "environment": (None, "good", None),
    "code-over-environment": ("good", DEAD, None),
    "flag-over-code-and-environment": (DEAD, DEAD, "good"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_command_follows_the_rule(
    command: str, case: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    code, env, flag = (redis_server.url if v == "good" else v for v in CASES[case])
    write_app(tmp_path, code)
    args = COMMANDS[command]
    if flag is not None:
        at = 2 if command == "dlq" else 1  # right after the (sub)command's name
        args = (*args[:at], "--url", flag, *args[at:])
    result = run_cli(*args, env_url=env, cwd=tmp_path)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    if command == "send":
        assert redis_server.url.split("@")[-1].rsplit("/", 1)[0] in result.stderr


# -- long-running entry points: `actorstream worker` and `python app.py` ------------------------


def wait_handled(worker: WorkerProcess, redis_server: RedisServer, tmp_path: Path) -> None:
    """Send one event to the test server and wait until the worker prints that it handled it."""
    sent = run_cli("send", "--url", redis_server.url, "urlapp:orders",
                   '{"order_id": 7, "amount": 1}', env_url=None, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 30
    while "handled 7" not in worker.output():
        assert worker.running, worker.output()
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.05)
    worker.interrupt()
    assert worker.wait(20) == 0, worker.output()


@pytest.mark.parametrize("case", list(CASES))
def test_cli_worker_follows_the_rule(
    case: str, tmp_path: Path, redis_server: RedisServer, worker_process  # type: ignore[no-untyped-def]
) -> None:
    code, env, flag = (redis_server.url if v == "good" else v for v in CASES[case])
    write_app(tmp_path, code)
    args = ["-m", "actorstream", "worker", "urlapp:system"]
    if flag is not None:
        args[3:3] = ["--url", flag]
    worker = worker_process(*args, env={"ACTORSTREAM_REDIS_URL": env or ""}, cwd=tmp_path)
    wait_handled(worker, redis_server, tmp_path)


@pytest.mark.parametrize("case", ["environment", "code-over-environment"])
def test_python_app_py_follows_the_rule(
    case: str, tmp_path: Path, redis_server: RedisServer, worker_process  # type: ignore[no-untyped-def]
) -> None:
    code, env, _ = (redis_server.url if v == "good" else v for v in CASES[case])
    app = write_app(tmp_path, code)
    worker = worker_process(str(app), env={"ACTORSTREAM_REDIS_URL": env or ""}, cwd=tmp_path)
    wait_handled(worker, redis_server, tmp_path)


def test_the_rule_is_in_the_cli_help() -> None:
    text = textwrap.dedent(run_cli("--help", env_url=None, cwd=Path.cwd()).stdout)
    assert "from --url, else\nthe redis_url the app's System is given in code" in text
