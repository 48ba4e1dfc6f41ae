"""The README's Quick start, followed literally: its blocks, as files, against a real Redis.

The blocks are taken from README.md itself (Sybil's Markdown lexer, the same pattern as the
documentation tests in conftest.py), never copied here: the ```` ```python title="app.py" ````
block saved as ``app.py``, the ``producer.py`` block saved next to it, and the ``actorstream``
command lines of the Quick start's shell blocks. The Redis URL comes only from
``ACTORSTREAM_REDIS_URL``, pointing at a test server on a free port.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from sybil import Document
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

from actorstream.testing import RedisServer

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_blocks() -> tuple[dict[str, str], list[str]]:
    """(Python blocks by title, shell command lines) of the README's Quick start section."""
    document = Document(README.read_text(), str(README))
    text = document.text
    start = text.index("## Quick start")
    end = text.index("\n## ", start + 1)
    files: dict[str, str] = {}
    commands: list[str] = []
    for region in FencedCodeBlockLexer(r'python[ \t]+title="(?P<title>[\w.-]+)"')(document):
        if start <= region.start < end:
            files[region.lexemes["title"]] = str(region.lexemes["source"])
    for region in FencedCodeBlockLexer("bash")(document):
        if start <= region.start < end:
            for line in str(region.lexemes["source"]).splitlines():
                command = line.split("#", 1)[0].strip()
                if command:
                    commands.append(command)
    return files, commands


def test_the_quick_start_blocks_are_found() -> None:
    files, commands = quick_start_blocks()
    assert set(files) == {"app.py", "producer.py"}
    assert "redis://" not in files["app.py"]  # the URL comes from the environment
    assert any(c.startswith("actorstream send app:orders ") for c in commands), commands
    assert "actorstream top app:system" in commands
    assert "python app.py" in commands


def test_quick_start_as_written(tmp_path: Path, redis_server: RedisServer,
                                worker_process) -> None:  # type: ignore[no-untyped-def]
    files, commands = quick_start_blocks()
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    env = {"ACTORSTREAM_REDIS_URL": redis_server.url, "PATH": os.environ["PATH"]}
    bin_dir = str(Path(sys.executable).parent)  # where `actorstream` is installed
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    # Shell one: the worker, exactly `python app.py`.
    assert "python app.py" in commands
    worker = worker_process("app.py", env=env, cwd=tmp_path)

    # Shell two: `python producer.py`.
    produced = subprocess.run([sys.executable, "producer.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr

    # Shell three: the README's `actorstream send ...` line, then `top` (once, not live).
    send = next(c for c in commands if c.startswith("actorstream send "))
    sent = subprocess.run(shlex.split(send), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    sent_event = re.search(r'"order_id": (\d+), "amount": (\d+)', send)
    assert sent_event is not None

    expected = {"1 99", *(f"{i} {i}" for i in range(1000)), " ".join(sent_event.groups())}
    deadline = time.monotonic() + 60
    while not expected <= set(worker.output().splitlines()):
        assert worker.running, worker.output()[-3000:]
        assert time.monotonic() < deadline, sorted(expected - set(worker.output().splitlines()))
        time.sleep(0.1)

    top = shlex.split(next(c for c in commands if c.startswith("actorstream top ")))
    shown = subprocess.run([*top[:2], "--once", *top[2:]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "shop" in shown.stdout

    worker.interrupt()  # Ctrl-C: drains and exits 0
    assert worker.wait(30) == 0, worker.output()[-3000:]
