"""``actorstream worker TARGET --processes N``: N worker processes under one parent.

The parent runs no actors. It starts N children (``actorstream worker TARGET``, each in its own
session so a terminal's Ctrl-C reaches only the parent), restarts a child that exits with
backoff (0.5 s doubling to 30 s, reset after a minute of uptime), forwards SIGINT/SIGTERM as
SIGTERM (a graceful drain; a second signal is forwarded again, and a child's second signal
forces it), and exits with the worst final status of its children. A child whose parent dies
drains on its own (``ACTORSTREAM_PARENT_PID``).

Metrics: each child serves its own endpoint on a loopback port the parent chose, and the
parent's ``--metrics-port`` serves the merged scrape of all children: counters and histograms
summed (a replaced child's last counts are carried over and every series is kept monotonic, so
a restart is not a counter reset), ``partitions_owned`` summed, lag/pending the max (one owner
per partition; two only during a hand-over). We aggregate scrapes instead of using
prometheus_client's multiprocess mode because that mode covers only metric objects updated
per event, and our collector reads counters the runtime keeps anyway (a free hot path).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio

from .._core.exits import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from .._ops.http import Response, Route, http_get, serve_http
from .._ops.logs import announce

if TYPE_CHECKING:
    from .._system import System

log = logging.getLogger("actorstream.cli.processes")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
STOP_TIMEOUT = 60.0
SCRAPE_TIMEOUT = 5.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def exit_status(returncode: int, *, stopping: bool) -> int:
    """A child's return code as a shell status; the SIGTERM/SIGINT we sent counts as a stop."""
    if returncode >= 0:
        return returncode
    if stopping and -returncode in (signal.SIGTERM, signal.SIGINT):
        return EXIT_OK
    return 128 - returncode


class Child:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: trio.Process | None = None
        self.port: int | None = None
        self.starts = 0
        self.status: int | None = None
        # Counter/histogram samples of the last successful scrape: carried over on exit.
        self.last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}


class Parent:
    def __init__(self, args: argparse.Namespace, system: System) -> None:
        self.args = args
        self.system = system
        self.children = [Child(i) for i in range(args.processes)]
        self.stopping = False
        self.forced = False
        self._stop = trio.Event()
        self.metrics = args.metrics_port is not None
        self.aggregate = Aggregate()

    def say(self, text: str, *, level: int = logging.INFO) -> None:
        announce(text, fmt=self.args.log_format, level=level)

    def command(self, child: Child) -> list[str]:
        args = self.args
        cmd = [sys.executable, "-m", "actorstream", "worker", args.target,
               "--log-format", args.log_format]
        verbosity = getattr(args, "verbose", 0) or 0
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        if child.port is not None:
            cmd += ["--metrics-port", str(child.port), "--metrics-host", "127.0.0.1"]
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The URL goes by environment, not argv: argv is visible to every user in `ps`.
        env["ACTORSTREAM_REDIS_URL"] = self.system.redis_url
        env["ACTORSTREAM_PARENT_PID"] = str(os.getpid())
        cwd = os.getcwd()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, env.get("PYTHONPATH")) if p)
        return env

    async def supervise(self, child: Child) -> None:
        backoff = BACKOFF_MIN
        while not self.stopping:
            child.port = _free_port() if self.metrics else None
            child.starts += 1
            started = trio.current_time()
            proc = await trio.lowlevel.open_process(
                self.command(child), env=self.environment(), start_new_session=True,
            )
            child.proc = proc
            log.info("child %d started (pid %d)", child.index, proc.pid)
            try:
                code = await proc.wait()
            finally:
                child.proc = None
                self.aggregate.retire(child)
            child.status = exit_status(code, stopping=self.stopping)
            if self.stopping:
                return
            if code in (EXIT_USAGE, EXIT_UNREACHABLE):
                # Bad configuration, or credentials Redis refuses, do not get better by
                # restarting (an unreachable Redis does not end a child: it waits): stop all.
                why = "configuration" if code == EXIT_USAGE else "Redis refused the credentials"
                self.say(f"child {child.index} (pid {proc.pid}) exited with {code} ({why}); "
                         "stopping every child", level=logging.ERROR)
                self.stop()
                return
            if trio.current_time() - started > STABLE_AFTER:
                backoff = BACKOFF_MIN
            self.say(f"child {child.index} (pid {proc.pid}) exited with {code}; "
                     f"restarting in {backoff:.1f}s")
            with trio.move_on_after(backoff):
                await self._stop.wait()
            backoff = min(backoff * 2, BACKOFF_MAX)

    def stop(self) -> None:
        """Begin a graceful stop: no more restarts, SIGTERM to every child (a drain)."""
        self.stopping = True
        self._stop.set()
        self.signal_children(signal.SIGTERM)

    def signal_children(self, sig: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)

    async def watch_signals(self, done: trio.Event) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if not self.stopping:
                    self.say(f"{signal.Signals(signum).name}: draining "
                             f"{len(self.children)} children (a second signal forces)")
                    self.stop()
                else:
                    self.forced = True
                    self.signal_children(signal.SIGTERM)
                    with trio.move_on_after(10.0):
                        await done.wait()
                    self.signal_children(signal.SIGKILL)
                    return

    def routes(self) -> dict[str, Route]:
        async def healthz() -> Response:
            alive = sum(1 for c in self.children if c.proc is not None)
            return Response.text(200, f"ok: {alive}/{len(self.children)} children running")

        async def readyz() -> Response:
            if self.stopping:
                return Response.text(503, "draining")
            results: list[str] = []

            async def ask(child: Child) -> None:
                if child.proc is None or child.port is None:
                    results.append(f"child {child.index}: not running")
                    return
                try:
                    status, body = await http_get("127.0.0.1", child.port, "/readyz",
                                                  timeout=SCRAPE_TIMEOUT)
                except (OSError, trio.TooSlowError) as exc:
                    results.append(f"child {child.index}: {type(exc).__name__}")
                    return
                if status != 200:
                    results.append(f"child {child.index}: {body.decode(errors='replace').strip()}")

            async with trio.open_nursery() as n:
                for child in self.children:
                    n.start_soon(ask, child)
            if results:
                return Response.text(503, "; ".join(sorted(results)))
            return Response.text(200, "ready")

        async def metrics() -> Response:
            texts: dict[int, str] = {}

            async def scrape(child: Child) -> None:
                if child.proc is None or child.port is None:
                    return
                try:
                    status, body = await http_get("127.0.0.1", child.port, "/metrics",
                                                  timeout=SCRAPE_TIMEOUT)
                except (OSError, trio.TooSlowError) as exc:
                    log.debug("child %d not scraped: %s", child.index, exc)
                    return
                if status == 200:
                    texts[child.index] = body.decode("utf-8", "replace")

            async with trio.open_nursery() as n:
                for child in self.children:
                    n.start_soon(scrape, child)
            body, content_type = self.aggregate.render(self.children, texts)
            return Response(200, body, content_type=content_type)

        return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}

    async def run(self) -> int:
        done = trio.Event()
        async with trio.open_nursery() as outer:
            outer.start_soon(self.watch_signals, done)
            if self.metrics:
                port = await outer.start(serve_http, self.routes(), self.args.metrics_port,
                                         self.args.metrics_host)
                self.say(f"ops endpoints for {len(self.children)} children on "
                         f"http://{self.args.metrics_host}:{port}")
            async with trio.open_nursery() as nursery:
                for child in self.children:
                    nursery.start_soon(self.supervise, child)
            done.set()
            outer.cancel_scope.cancel()
        statuses = [c.status for c in self.children if c.status is not None]
        return max(statuses, default=EXIT_OK)


Key = tuple[str, tuple[tuple[str, str], ...]]
#: Gauges whose per-child values are maxed rather than summed (one owner per partition).
MAX_GAUGES = frozenset({"actorstream_partition_lag", "actorstream_partition_pending"})


class Aggregate:
    """Merges children's scrapes into one exposition (see the module docstring)."""

    def __init__(self) -> None:
        self.retired: dict[Key, float] = {}
        self.floor: dict[Key, float] = {}
        self.meta: dict[str, tuple[str, str]] = {}  # family -> (type, help)
        self.family_of: dict[str, str] = {}  # sample name -> family

    def retire(self, child: Child) -> None:
        for key, value in child.last.items():
            self.retired[key] = self.retired.get(key, 0.0) + value
        child.last = {}

    def render(self, children: list[Child], texts: dict[int, str]) -> tuple[bytes, str]:
        from prometheus_client.parser import text_string_to_metric_families

        monotonic: dict[Key, float] = {}
        gauges: dict[Key, float] = {}
        for child in children:
            text = texts.get(child.index)
            if text is None:
                continue
            child.last = {}
            for family in text_string_to_metric_families(text):
                if not family.name.startswith("actorstream_"):
                    continue
                self.meta[family.name] = (family.type, family.documentation)
                for sample in family.samples:
                    self.family_of[sample.name] = family.name
                    key: Key = (sample.name, tuple(sorted(sample.labels.items())))
                    if family.type in ("counter", "histogram"):
                        if sample.name.endswith("_created"):
                            continue
                        child.last[key] = sample.value
                        monotonic[key] = monotonic.get(key, 0.0) + sample.value
                    elif family.name in MAX_GAUGES:
                        gauges[key] = max(gauges.get(key, -math.inf), sample.value)
                    else:
                        gauges[key] = gauges.get(key, 0.0) + sample.value
        for key, value in self.retired.items():
            monotonic[key] = monotonic.get(key, 0.0) + value
        for key, value in monotonic.items():
            self.floor[key] = max(self.floor.get(key, 0.0), value)
        return _exposition(self.meta, self.family_of, {**self.floor, **gauges})


def _exposition(
    meta: dict[str, tuple[str, str]], family_of: dict[str, str], values: dict[Key, float]
) -> tuple[bytes, str]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric

    families: dict[str, Metric] = {}
    for (name, labels), value in sorted(values.items()):
        fam_name = family_of.get(name)
        if fam_name is None:
            continue
        family = families.get(fam_name)
        if family is None:
            kind, doc = meta[fam_name]
            family = families[fam_name] = Metric(fam_name, doc, kind)
        family.add_sample(name, dict(labels), value)

    class _Merged:
        def collect(self) -> Iterator[Metric]:
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8"


def run_parent(args: argparse.Namespace, system: System) -> int:
    parent = Parent(args, system)
    parent.say(f"{args.processes} worker processes of {system.name!r} "
               f"(parent pid {os.getpid()}); Ctrl-C to stop")
    code: int = trio.run(parent.run)
    parent.say(f"all {args.processes} workers of {system.name!r} stopped (status {code})")
    return code


__all__ = ["Aggregate", "Parent", "exit_status", "run_parent"]
