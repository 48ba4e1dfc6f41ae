"""``WorkerProcess``: a Python worker in a subprocess (public as actorstream.testing)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from .._servers.process import Owned, signal_process, spawn, wait_state

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """A Python worker in a subprocess: ``[sys.executable, *args]``, output captured to a file.

    ``args`` are what follows the interpreter, e.g. ``("-m", "actorstream", "worker",
    "app:system")`` or ``("my_worker.py", "--flag")``. The environment is this process's, plus
    ``env``, plus ``ACTORSTREAM_REDIS_URL`` when ``redis_url`` is given, plus ``pythonpath``
    prepended to ``PYTHONPATH``; output is unbuffered so ``output()`` is current.

    Signals: ``kill`` (SIGKILL), ``terminate`` (SIGTERM), ``interrupt`` (SIGINT, a Ctrl-C),
    ``pause``/``resume`` (SIGSTOP/SIGCONT). ``wait`` blocks the thread; in trio code use
    ``await wait_exited()`` and ``await wait_for_output()`` instead.
    """

    def __init__(
        self,
        *args: str,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        output_path: str | os.PathLike[str] | None = None,
        name: str = "worker",
    ) -> None:
        if not args:
            raise ValueError("WorkerProcess needs arguments, e.g. ('-m', 'package', ...)")
        self.args: tuple[str, ...] = tuple(args)
        self.redis_url = redis_url
        self.extra_env: dict[str, str] = dict(env or {})
        self.cwd = cwd
        self.pythonpath = [os.fspath(p) for p in pythonpath]
        self.name = name
        self._owned = Owned()
        self._finalizer = weakref.finalize(self, self._owned.release)
        if output_path is None:
            self._owned.dir = Path(tempfile.mkdtemp(prefix=f"actorstream-{name}-"))
            self.output_path = self._owned.dir / "output.log"
        else:
            self.output_path = Path(output_path)

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return self._owned.proc

    @property
    def command(self) -> list[str]:
        return [sys.executable, *self.args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        if self.redis_url is not None:
            env["ACTORSTREAM_REDIS_URL"] = self.redis_url
        if self.pythonpath:
            parts = [*self.pythonpath]
            if env.get("PYTHONPATH"):
                parts.append(env["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(parts)
        return env

    def start(self) -> Self:
        """Start the process (once); returns at once, without waiting for it to be ready."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started")
        with self.output_path.open("ab") as out:
            self._owned.proc = spawn(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.environment(),
                # Its own session: a terminal's Ctrl-C goes to pytest; interrupt() sends ours.
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """None while running; negative ``-N`` when ended by signal N."""
        return None if self._proc is None else self._proc.poll()

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        proc = self._require()
        signal_process(proc, signal.SIGKILL)
        proc.wait()

    def terminate(self) -> None:
        """SIGTERM (after SIGCONT, so a paused worker acts on it); does not wait."""
        proc = self._require()
        signal_process(proc, signal.SIGCONT)
        signal_process(proc, signal.SIGTERM)

    def interrupt(self) -> None:
        """SIGINT, like Ctrl-C in the worker's terminal; does not wait."""
        proc = self._require()
        signal_process(proc, signal.SIGCONT)
        signal_process(proc, signal.SIGINT)

    def pause(self) -> None:
        """SIGSTOP: the worker freezes mid-whatever, its sockets stay open."""
        proc = self._require()
        signal_process(proc, signal.SIGSTOP)
        wait_state(proc, stopped=True)

    def resume(self) -> None:
        """SIGCONT."""
        proc = self._require()
        signal_process(proc, signal.SIGCONT)
        wait_state(proc, stopped=False)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process ends; its return code. ``subprocess.TimeoutExpired`` if not."""
        return self._require().wait(timeout)

    async def wait_exited(self) -> int:
        """Like ``wait``, without blocking the trio loop; bound it with ``trio.fail_after``."""
        import trio

        proc = self._require()
        while proc.poll() is None:  # noqa: ASYNC110 - a child's exit is not a trio event
            await trio.sleep(0.01)
        return proc.returncode

    async def wait_for_output(self, text: str) -> None:
        """Wait until ``text`` appears in the output; bound it with ``trio.fail_after``.

        Raises ``RuntimeError`` (with the output) if the process ends without printing it.
        """
        import trio

        proc = self._require()
        while text not in self.output():
            if proc.poll() is not None and text not in self.output():
                raise RuntimeError(
                    f"{self.name} exited with {proc.returncode} before printing {text!r}; "
                    "output:\n" + self.output()[-3000:]
                )
            await trio.sleep(0.01)

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Kill the process if it still runs (even paused) and reap it. Idempotent.

        The output file is kept while this object lives (so it can still be read); the
        directory this object made for it goes with ``cleanup()``, garbage collection or exit.
        """
        self._owned.kill()

    def cleanup(self) -> None:
        """Kill the process, and delete the output file's directory if this object made it."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._proc

    def __repr__(self) -> str:
        state = (
            "not started"
            if self._proc is None
            else ("running" if self.running else f"exited {self.returncode}")
        )
        return f"<WorkerProcess {self.name} {shlex.join(self.args)} {state}>"
