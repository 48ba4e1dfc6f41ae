"""Every Python block in README.md and docs/*.md runs as written (Sybil), in `nox -s tests`.

Each document gets its own ``redis-server`` on a free port, named by ``ACTORSTREAM_REDIS_URL``
while its blocks run, so ``System("shop")`` in a block talks to it (never to a Redis you run).
The blocks of one document share a namespace, top to bottom.

- A plain ```` ```python ```` block is executed.
- A block titled as a file (```` ```python title="app.py" ````) is saved under that name in a
  temporary directory on ``sys.path`` and imported, as ``python -c "import app"`` would: a
  ``if __name__ == "__main__":`` part does not run, top-level code (``trio.run(main)``) does, and
  later blocks (``from app import orders``) see it. Its public names join the namespace.
- A ```` ```console ```` block is a shell session: each ``$ command`` runs with ``bash`` in that
  temporary directory (``actorstream`` on ``PATH``), and its output (stdout and stderr) must be
  exactly the lines that follow it. Use it for output that does not change from run to run.
- ``<!-- skip: next -->`` before a block skips it (Sybil's marker): for fragments that cannot
  run, such as a block that runs a worker forever. Use sparingly.

Under pytest-xdist (``-n``) the blocks of one document run on one worker, in order
(``pytest_xdist_make_scheduler`` below).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sybil import Example, Sybil
from sybil.evaluators.python import PythonEvaluator, pad
from sybil.parsers.markdown import SkipParser
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

from actorstream.testing import RedisServer

# The fixtures users get (docs/testing.md): tests/examples and the docs use them as users do.
pytest_plugins = ["actorstream.testing.pytest_plugin"]

URL_ENV = "ACTORSTREAM_REDIS_URL"
#: ```` ```python ```` or ```` ```python title="app.py" ```` (MkDocs Material shows the title).
PYTHON_BLOCK = r'python(?:[ \t]+title="(?P<title>[\w.-]+\.py)")?'


def _evaluate_file_block(example: Example) -> None:
    """Save the block under its title and import it (see the module docstring)."""
    namespace = example.namespace
    folder = Path(namespace["__docs_dir__"])
    title = example.region.lexemes["title"]
    path = folder / title
    # Blank lines keep the block's line numbers in tracebacks.
    path.write_text(pad(str(example.parsed), example.line + example.parsed.line_offset))
    name = path.stem
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    namespace["__docs_modules__"].append(name)
    namespace.update({k: v for k, v in vars(module).items() if not k.startswith("_")})


def _evaluate_console(example: Example) -> None:
    """Run each ``$ command`` of a console block and compare its output (see the docstring)."""
    steps: list[tuple[str, list[str]]] = []
    for line in str(example.parsed).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line.rstrip())
        else:
            raise ValueError(f"a console block must start with '$ ': {line!r}")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for command, expected in steps:
        result = subprocess.run(
            ["bash", "-c", command], cwd=example.namespace["__docs_dir__"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
        )
        got = [line.rstrip() for line in result.stdout.rstrip("\n").splitlines()]
        while expected and not expected[-1]:
            expected.pop()
        if got != expected:
            raise AssertionError(
                f"$ {command}\n--- the documentation shows:\n" + "\n".join(expected)
                + "\n--- the command printed:\n" + "\n".join(got)
            )


class ConsoleParser:
    """```` ```console ```` blocks."""

    def __init__(self) -> None:
        self.lexer = FencedCodeBlockLexer("console")

    def __call__(self, document: Any) -> Any:
        for region in self.lexer(document):
            region.parsed = region.lexemes["source"]
            region.evaluator = _evaluate_console
            yield region


class DocsPythonParser:
    """Python blocks, plain or titled as a file."""

    def __init__(self) -> None:
        self.lexer = FencedCodeBlockLexer(PYTHON_BLOCK)
        self.plain = PythonEvaluator()

    def __call__(self, document: Any) -> Any:
        for region in self.lexer(document):
            region.parsed = region.lexemes["source"]
            region.evaluator = (
                _evaluate_file_block if region.lexemes.get("title") else self.plain
            )
            yield region


#: Where a System given no URL points during the tests: nothing listens on port 1.
UNREACHABLE_URL = "redis://127.0.0.1:1/0"


def pytest_configure(config: Any) -> None:
    """Tests never touch a Redis they did not start: not the one you exported for your own work
    (the README tells you to), nor the default 127.0.0.1:6379. Whatever forgets to name a test
    server fails to connect instead."""
    os.environ[URL_ENV] = UNREACHABLE_URL


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``-n`` (pytest-xdist), the blocks of one document go to one worker, in order (they
    share a namespace and a server); every other test is scheduled on its own."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class DocumentsWhole(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path, _, rest = nodeid.partition("::")
            return path if rest.startswith("sybil:") else nodeid

    return DocumentsWhole(config, log)


#: Tests of minutes' worth in all (worker processes, lease timing, command-line processes): they
#: start first, longest first, so that under ``-n`` no worker picks one up while the other has
#: nothing left to do. Order inside each group, and of the rest, is the collection order.
START_FIRST = (
    "test_deadletter.py::test_cli_",
    "test_cluster_tools.py::",
    "test_fault_scenarios.py::",
    "test_coordinator.py::",
    "test_wheel.py::",
    "test_newcomer_paths.py::",
    "test_worker_start.py::",
    "test_ops_processes.py::",
    "test_cli.py::",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, k in enumerate(START_FIRST) if k in item.nodeid), len(START_FIRST))

    items.sort(key=rank)


#: Per logger (None: the root): level, propagate, disabled, handlers.
LoggingState = dict[str | None, tuple[int, bool, bool, list[logging.Handler]]]


def _logging_state() -> LoggingState:
    loggers: list[logging.Logger] = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return {
        lg.name if lg is not logging.root else None: (
            lg.level, lg.propagate, lg.disabled, list(lg.handlers)
        )
        for lg in loggers
    }


def _restore_logging(saved: LoggingState) -> None:
    """A document may configure logging as an app would (docs/running.md does): put it back,
    so the tests that run after it in the same process (with ``-n``, any test) see none of it."""
    for name, logger in [(None, logging.getLogger()), *logging.Logger.manager.loggerDict.items()]:
        if not isinstance(logger, logging.Logger):
            continue
        level, propagate, disabled, handlers = saved.get(name, (logging.NOTSET, True, False, []))
        logger.setLevel(level)
        logger.propagate, logger.disabled, logger.handlers = propagate, disabled, handlers


def _setup(namespace: dict[str, Any]) -> None:
    server = RedisServer().start()
    folder = tempfile.mkdtemp(prefix="actorstream-docs-")
    namespace.update(
        __docs_server__=server,
        __docs_dir__=folder,
        __docs_modules__=[],
        __docs_old_url__=os.environ.get(URL_ENV),
        __docs_logging__=_logging_state(),
    )
    os.environ[URL_ENV] = server.url
    sys.path.insert(0, folder)


def _teardown(namespace: dict[str, Any]) -> None:
    _restore_logging(namespace["__docs_logging__"])
    old = namespace["__docs_old_url__"]
    if old is None:
        os.environ.pop(URL_ENV, None)
    else:
        os.environ[URL_ENV] = old
    folder = namespace["__docs_dir__"]
    if folder in sys.path:
        sys.path.remove(folder)
    for name in namespace["__docs_modules__"]:
        sys.modules.pop(name, None)
    namespace["__docs_server__"].close()
    shutil.rmtree(folder, ignore_errors=True)


pytest_collect_file = Sybil(
    parsers=[DocsPythonParser(), ConsoleParser(), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    setup=_setup,
    teardown=_teardown,
    name="docs",
).pytest()
