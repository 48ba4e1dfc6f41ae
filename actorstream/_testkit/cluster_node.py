"""``ClusterNode``: one ``redis-server --cluster-enabled yes`` process of a ``RedisCluster``,
and the blocking admin-command plumbing the cluster helper shares (free ports, ``_call``, ``INFO``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from redis import exceptions as rex

from .._servers.ping import run_in_thread
from .._servers.process import spawn
from .._transport import Client

__all__ = ["SLOTS", "START_TIMEOUT", "ClusterNode", "CommandError"]

SLOTS = 16384
START_TIMEOUT = 20.0


def find_cluster_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server on PATH: RedisCluster needs Redis 7+ binaries")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free ports (kept bound until all are chosen, so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class CommandError(RuntimeError):
    """An error reply to an admin command sent by the helper."""


class PortTaken(RuntimeError):
    """Another process bound the node's port (or bus port) between the probe and the spawn."""


@asynccontextmanager
async def _node_client(port: int, timeout: float) -> AsyncIterator[Client]:
    """A client of this one node (admin commands go to it, never routed), closed shielded."""
    client = Client.from_url(
        f"redis://127.0.0.1:{port}/0",
        connect_timeout=timeout,
        socket_timeout=timeout,
        client_name="actorstream:testing",
        max_connections=1,
        connect_retry_for=0.0,
        cluster=False,
    )
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


async def _call_async(port: int, args: tuple[Any, ...], timeout: float) -> Any:
    async with _node_client(port, timeout) as client:
        return await client.execute(*args)


def _call(port: int, *args: Any, timeout: float = 5.0) -> Any:
    """One command to one node, over actorstream's own transport (in a helper thread, so it
    works inside and outside a trio run). Error replies raise ``CommandError``, an unreachable
    node the built-in ``ConnectionError``."""
    try:
        return run_in_thread(_call_async, port, args, timeout)
    except (rex.ConnectionError, rex.TimeoutError) as exc:
        raise ConnectionError(f"127.0.0.1:{port}: {exc}") from None
    except rex.ResponseError as exc:
        raise CommandError(f"{args[0]} on :{port}: {type(exc).__name__}: {exc}") from None


async def _pipeline_async(port: int, commands: list[tuple[Any, ...]], timeout: float) -> Any:
    async with _node_client(port, timeout) as client:
        return await client.pipeline(commands)


def _pipeline(port: int, commands: list[tuple[Any, ...]], timeout: float = 15.0) -> list[Any]:
    """Many admin commands to one node in one round trip; the first error reply raises
    ``CommandError`` (the commands after it ran too)."""
    try:
        replies: list[Any] = run_in_thread(_pipeline_async, port, commands, timeout)
    except (rex.ConnectionError, rex.TimeoutError) as exc:
        raise ConnectionError(f"127.0.0.1:{port}: {exc}") from None
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, Exception):
            raise CommandError(f"{command[:3]} on :{port}: {type(reply).__name__}: {reply}")
    return replies


def _info(port: int, section: str) -> dict[str, str]:
    text = _call(port, "INFO", section).decode()
    return dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )


class _Process:
    """A child process and its directory, released by ``weakref.finalize`` (no orphans)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None

    def release(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class ClusterNode:
    """One ``redis-server --cluster-enabled yes`` process: kill, pause, resume, restart it."""

    def __init__(
        self, binary: str, port: int, bus_port: int, args: Sequence[str], base_dir: Path
    ) -> None:
        self.binary = binary
        self.port = port
        self.bus_port = bus_port
        self.args = tuple(args)
        self.host = "127.0.0.1"
        self.id = ""
        self._owned = _Process()
        self._owned.dir = base_dir / str(port)
        self._owned.dir.mkdir()
        self._finalizer = weakref.finalize(self, self._owned.release)
        self.paused = False

    def __repr__(self) -> str:
        return f"<ClusterNode :{self.port} {self.id[:8]} running={self.running}>"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def dir(self) -> Path:
        assert self._owned.dir is not None
        return self._owned.dir

    @property
    def running(self) -> bool:
        proc = self._owned.proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._owned.proc
        return proc.pid if proc is not None and self.running else None

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Spawn (or respawn on the same port and directory: nodes.conf brings its identity)."""
        if self.running:
            raise RuntimeError(f"node :{self.port} is already running")
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--cluster-enabled", "yes",
            "--cluster-port", str(self.bus_port),
            "--cluster-config-file", "nodes.conf",
            "--dir", str(self.dir),
            "--logfile", "redis.log",
            "--daemonize", "no",
            "--save", "",
            "--protected-mode", "no",
            *self.args,
        ]  # fmt: skip
        self._owned.proc = spawn(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                log = self.log()
                if "Address already in use" in log:
                    raise PortTaken(f"redis-server :{self.port}: address in use")
                raise RuntimeError(f"redis-server :{self.port} exited:\n{log[-2000:]}")
            try:
                if _call(self.port, "PING", timeout=1.0) == b"PONG":
                    break
            except (OSError, CommandError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server :{self.port} did not answer PING")
            time.sleep(0.005)
        self.id = _call(self.port, "CLUSTER", "MYID").decode()
        self.paused = False

    def call(self, *args: Any, timeout: float = 5.0) -> Any:
        """Send one command to this node (raises ``CommandError`` on an error reply)."""
        return _call(self.port, *args, timeout=timeout)

    def pipeline(self, commands: list[tuple[Any, ...]], timeout: float = 15.0) -> list[Any]:
        """Send many commands to this node in one round trip (``CommandError`` on an error)."""
        return _pipeline(self.port, commands, timeout=timeout)

    def info(self, section: str) -> dict[str, str]:
        return _info(self.port, section)

    def kill(self) -> None:
        """kill -9, and reap."""
        proc = self._owned.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered, the cluster bus goes quiet."""
        proc = self._owned.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"node :{self.port} is not running")
        proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        proc = self._owned.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """kill -9 if running, then start again on the same port (rejoins from nodes.conf)."""
        self.kill()
        self.start(timeout)

    def close(self) -> None:
        self._finalizer()

    @property
    def is_primary(self) -> bool:
        return self.info("replication").get("role") == "master"
