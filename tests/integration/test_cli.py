"""The CLI's contract: exit codes, one clear error line, send validates before sending.

A test whose commands all fail before any Redis command (bad targets, bad input) takes
``redis_server``, one Redis: ``redis_url``'s Cluster variants would run the same lines again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actorstream.testing import RedisServer

APP = textwrap.dedent(
    """
    from actorstream import Record, System

    system = System("clitest")

    class Order(Record):
        order_id: int
        amount: int

    orders = system.stream("orders", record=Order, partitions=4, key="order_id")
    notes = system.stream("notes", partitions=1)

    @system.actor(orders)
    async def bill(order: Order) -> None:
        pass
    """
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "cliapp.py"
    path.write_text(APP)
    return path


def cli(*args: str, url: str | None = None, stdin: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if url is not None:
        env["ACTORSTREAM_REDIS_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "actorstream", *args],
        capture_output=True, text=True, timeout=60, env=env, input=stdin, cwd=cwd,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("actorstream: error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def stream_lengths(redis: RedisServer, n: int = 4) -> int:
    total = 0
    for p in range(n):
        out = subprocess.run(
            ["redis-cli", "-p", str(redis.port), "XLEN", f"as:{{clitest:orders:{p}}}:s"],
            capture_output=True, text=True, check=True,
        )
        total += int(out.stdout.strip())
    return total


def test_version_and_help() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("actorstream ")
    result = cli("--help")
    assert result.returncode == 0
    for command in ("worker", "send", "status", "top", "demo"):
        assert command in result.stdout
    assert cli().returncode == 2


def test_bad_module_path(app: Path, redis_server: RedisServer) -> None:
    result = cli("send", "no_such_module_xyz:orders", "{}", url=redis_server.url)
    assert result.returncode == 2
    assert "no_such_module_xyz" in one_error_line(result)
    result = cli("worker", f"{app}:nothing", url=redis_server.url)
    assert result.returncode == 2
    assert "no attribute 'nothing'" in one_error_line(result)
    result = cli("worker", "justaname", url=redis_server.url)
    assert result.returncode == 2
    assert "module:attribute" in one_error_line(result)


def test_bad_json_names_the_argument(app: Path, redis_server: RedisServer) -> None:
    result = cli("send", f"{app}:orders", '{"order_id": 1, "amount": 2}', "{nope",
                 url=redis_server.url)
    assert result.returncode == 2
    assert "argument 2: bad JSON" in one_error_line(result)


def test_unknown_stream(app: Path, redis_server: RedisServer) -> None:
    result = cli("send", f"{app}:payments", "{}", url=redis_server.url)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "unknown stream 'payments'" in line
    assert "notes, orders" in line


def test_unreachable_redis(app: Path) -> None:
    bad = "redis://:hunter2@127.0.0.1:1/0"
    for args in (
        ("send", f"{app}:orders", '{"order_id": 1, "amount": 2}'),
        ("status", f"{app}:system"),
        # (`worker` waits for Redis instead: tests/integration/test_worker_start.py)
        ("top", "--once", "clitest"),
    ):
        result = cli(*args, url=bad)
        assert result.returncode == 3, (args, result.stderr)
        line = one_error_line(result)
        assert "cannot reach Redis" in line
        assert "hunter2" not in line
        assert line.count("redis://") == 1, line  # the URL is named once
    # --url wins over the environment, and is accepted before the subcommand too.
    result = cli("--url", bad, "status", "clitest", url="redis://127.0.0.1:2/0")
    assert result.returncode == 3
    assert "127.0.0.1:1" in one_error_line(result)


def test_send_bad_file_sends_nothing(app: Path, redis_server: RedisServer, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"order_id": 1, "amount": 10}\n'
        "\n"
        '{"order_id": 2, "amount": 20}\n'
        '{"order_id": 3, "amount": "thirty"}\n'
        '{"order_id": 4, "amount": 40}\n'
    )
    result = cli("send", f"{app}:orders", "--file", str(events), url=redis_server.url)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "line 4" in line
    assert "amount" in line
    assert stream_lengths(redis_server) == 0
    # Missing field, and a non-object.
    result = cli("send", f"{app}:orders", '{"order_id": 5}', url=redis_server.url)
    assert result.returncode == 2
    assert "amount" in one_error_line(result)
    result = cli("send", f"{app}:orders", "[1]", url=redis_server.url)
    assert "JSON object" in one_error_line(result)
    assert stream_lengths(redis_server) == 0


def test_send_file_and_stdin(app: Path, redis_server: RedisServer, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(
        json.dumps({"order_id": i, "amount": i * 10}) + "\n" for i in range(25)
    ))
    result = cli("send", f"{app}:orders", "--file", str(events), "--print-ids",
                 url=redis_server.url)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 25
    assert "sent 25 event(s)" in result.stderr
    result = cli("send", f"{app}:orders", "-f", "-", url=redis_server.url,
                 stdin='{"order_id": 99, "amount": 1}\n')
    assert result.returncode == 0, result.stderr
    assert stream_lengths(redis_server) == 26


def test_status_json(app: Path, redis_server: RedisServer) -> None:
    cli("send", f"{app}:orders", '{"order_id": 1, "amount": 2}', url=redis_server.url)
    result = cli("status", "--json", f"{app}:system", url=redis_server.url)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["app"] == "clitest"
    assert len(doc["partitions"]) == 4
    assert {p["state"] for p in doc["partitions"]} == {"unowned"}
    assert sum(p["lag"] for p in doc["partitions"]) == 1
    assert doc["coordinator"]["unowned"] == 4


def test_worker_graceful_exit(app: Path, redis_url: str, worker_process) -> None:  # type: ignore[no-untyped-def]
    import time

    worker = worker_process("-m", "actorstream", "worker", f"{app}:system", redis_url=redis_url)
    deadline = time.monotonic() + 20
    while "Ctrl-C to stop" not in worker.output():
        assert worker.running, worker.output()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    worker.interrupt()
    assert worker.wait(20) == 0, worker.output()
    assert "stopped" in worker.output()


def test_demo_no_top(redis_url: str) -> None:
    result = cli("demo", "--duration", "4", "--no-top", "--rate", "100", url=redis_url)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("demo: sent ")
    assert "processed" in summary and "restarts" in summary and "dead letters" in summary


def test_demo_starts_embedded_redis_when_unreachable() -> None:
    result = cli("demo", "--duration", "2", "--no-top", url="redis://127.0.0.1:1/0")
    assert result.returncode == 0, result.stderr
    assert "starting an embedded redis-server" in result.stderr
    assert result.stdout.startswith("demo: sent ")


def test_demo_without_a_terminal_says_so_and_runs_without_top(redis_url: str) -> None:
    """No blank screen when stdout is not a terminal."""
    result = cli("demo", "--duration", "2", "--rate", "50", url=redis_url)
    assert result.returncode == 0, result.stderr
    assert "stdout is not a terminal, so no live view" in result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("demo: sent ")


def test_demo_help_says_what_it_does() -> None:
    """--duration and --url are described truthfully."""
    text = " ".join(cli("demo", "--help").stdout.split())
    assert "20 s with --no-top" in text
    assert "embedded redis-server" in text
    assert "the URL the app's System declares" not in text


def test_import_error_keeps_its_traceback_with_verbose(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """One line by default; -v / -vv add the app's traceback."""
    bad = tmp_path / "badapp.py"
    bad.write_text("import json\n\ndef helper():\n    raise RuntimeError('app broke')\n\n"
                   "helper()\n")
    result = cli("worker", f"{bad}:system", url=redis_server.url)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "RuntimeError: app broke" in line and "-v shows the traceback" in line
    for verbose in (("-v", "worker"), ("worker", "-vv")):
        result = cli(*verbose, f"{bad}:system", url=redis_server.url)
        assert result.returncode == 2
        assert "Traceback (most recent call last)" in result.stderr
        assert 'badapp.py", line 4, in helper' in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("actorstream: error: cannot load")
    result = cli("-v", "send", "cliapp_missing_dep_mod:orders", "{}", cwd=tmp_path,
                 url=redis_server.url)
    assert "Traceback" not in result.stderr  # the module itself is missing: nothing to show


def test_send_several_json_arguments_print_ids_with_partitions(
    app: Path, redis_server: RedisServer
) -> None:
    """JSON arguments on both sides of --print-ids; ids name their partition."""
    events = [json.dumps({"order_id": i, "amount": 1}) for i in range(6)]
    result = cli("send", f"{app}:orders", events[0], "--print-ids", *events[1:],
                 url=redis_server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    for i, line in enumerate(lines):
        where, entry_id = line.split()
        partition = int(where.removeprefix("orders[").removesuffix("]"))
        key = f"as:{{clitest:orders:{partition}}}:s"
        found = subprocess.run(["redis-cli", "-p", str(redis_server.port), "XRANGE", key,
                                entry_id, entry_id], capture_output=True, text=True).stdout
        assert f'"order_id":{i}' in found.replace(" ", ""), (line, found)
    assert len({ln.split()[0] for ln in lines}) > 1  # several partitions
    result = cli("send", f"{app}:orders", events[0], "--bogus", url=redis_server.url)
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr


def test_send_rejects_unknown_fields_unless_allowed(app: Path, redis_server: RedisServer) -> None:
    """A typo does not vanish."""
    typo = '{"order_id": 1, "amount": 2, "amout": 3}'
    result = cli("send", f"{app}:orders", typo, url=redis_server.url)
    assert result.returncode == 2
    assert one_error_line(result) == (
        "actorstream: error: argument 1: unknown field(s) 'amout' for Order "
        "(fields: order_id, amount); --allow-unknown drops them"
    )
    assert stream_lengths(redis_server) == 0
    result = cli("send", f"{app}:orders", typo, "--allow-unknown", url=redis_server.url)
    assert result.returncode == 0, result.stderr
    assert stream_lengths(redis_server) == 1


def test_docs_cli_example_error_is_the_real_one(
    app: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    """The error docs/cli.md shows is what `send --file` prints."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    shown = next(ln.strip() for ln in docs.splitlines() if "events.jsonl line 4" in ln)
    (tmp_path / "events.jsonl").write_text(
        '{"order_id": 1, "amount": 10}\n\n{"order_id": 2, "amount": 20}\n'
        '{"order_id": 3, "amount": "thirty"}\n'
    )
    result = cli("send", f"{app}:orders", "--file", "events.jsonl", cwd=tmp_path,
                 url=redis_server.url)
    assert one_error_line(result) == shown


def test_passwords_in_query_strings_are_never_printed(app: Path, tmp_path: Path) -> None:
    """The same, for unix:// URLs that carry the password as a parameter."""
    url = f"unix://{tmp_path}/no.sock?db=0&password=hunter2"
    result = cli("send", f"{app}:orders", '{"order_id": 1, "amount": 2}', url=url)
    assert result.returncode == 3
    line = one_error_line(result)
    assert "hunter2" not in line and "password=***" in line
