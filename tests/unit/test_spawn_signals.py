"""Children started by ``spawn`` act on SIGINT and SIGTERM, whatever their parent does.

A child inherits the forking thread's signal mask and an ignored disposition (a test run
started in the background by a shell ignores SIGINT), and a Python child never turns either
back on: ``WorkerProcess.interrupt`` would go unheard and the test hang.
"""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from actorstream._servers.process import _die_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def signal_mask(pid: int, field: str) -> int:
    """A mask of ``/proc/<pid>/status``: ``SigBlk`` (blocked) or ``SigIgn`` (ignored)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} line")


def start_from_a_thread_blocking_sigint(
    preexec: Callable[[], object] | None,
) -> subprocess.Popen[bytes]:
    """A child forked by a thread that blocks SIGINT, of a process that ignores it."""

    def start() -> subprocess.Popen[bytes]:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            preexec_fn=preexec,
        )

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(start).result()
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("preexec", ["ours", "none"])
def test_a_child_starts_with_no_signal_blocked(preexec: str) -> None:
    proc = start_from_a_thread_blocking_sigint(_die_with_parent() if preexec == "ours" else None)
    try:
        blocked, ignored = signal_mask(proc.pid, "SigBlk"), signal_mask(proc.pid, "SigIgn")
        sigint = 1 << (signal.SIGINT - 1)
        if preexec == "ours":
            assert blocked == 0 and not ignored & sigint
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) != 0  # it got the SIGINT (KeyboardInterrupt), not the 30 s
        else:  # what it guards against: the thread's mask and the ignoring are inherited
            assert blocked & sigint and ignored & sigint
    finally:
        proc.kill()
        proc.wait()
