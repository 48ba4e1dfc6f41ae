"""``actorstream demo``: the whole thing in one command, on a fresh machine.

Starts an embedded redis-server unless a configured one answers, runs the demo app shipped in
the package (``actorstream._demo.app``: a producer of orders, 8 partitions, a handler that
sometimes fails) as a worker in this process, under the live top. Ctrl-C (or q) stops
everything gracefully. Without a terminal on stdout there is no live view: it says so and runs
as ``--no-top``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
from typing import Any

import attrs
import trio

from .._core.exits import EXIT_FAILURE, EXIT_OK
from .._embedded import EmbeddedRedis
from .._ops.logs import announce
from .._system import System
from .._top import LayoutEntry, Poller, ViewOptions
from .._transport import Client, redact_url
from .._tree.root import Worker
from ._common import URL_ENV, CliError, add_command, check_reachable, configured_url, import_module

DEMO_APP = "actorstream._demo.app"
#: How long ``--no-top`` runs when no --duration is given.
NO_TOP_DURATION = 20.0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    # Not the common --url: the demo's falls back to an embedded server, not to a default URL.
    parser = add_command(
        subparsers,
        "demo",
        "run a demo app (producer, 8 partitions, failures) under the live top",
        "Run the demo app in this process: a producer of orders, a worker on 8 "
        "partitions whose handler sometimes fails (so restarts and dead letters show), under "
        "the live top. Ctrl-C stops everything cleanly.",
        handler=run,
    )
    parser.add_argument(
        "--url", metavar="URL", default=argparse.SUPPRESS,
        help=f"Redis to run on (default: ${URL_ENV}); when none is given, or the variable's does "
        "not answer, an embedded redis-server (from PATH, else the 'embedded' extra) is "
        "started and removed on exit",
    )
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more logging on stderr (-v info, -vv debug)")
    parser.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C or q with the live view; "
        f"{NO_TOP_DURATION:g} s with --no-top)",
    )
    parser.add_argument(
        "--no-top", action="store_true",
        help="no live view: print a summary at the end (for scripts and CI); the default "
        "when stdout is not a terminal",
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, metavar="EVENTS_PER_S",
        help="orders produced per second (default 200)",
    )
    parser.add_argument("--app", default=DEMO_APP, metavar="MODULE|PATH",
                        help=f"the demo app module (default: {DEMO_APP}, shipped in the "
                        "package)")


def _check_args(args: argparse.Namespace) -> None:
    if args.duration is not None and not args.duration > 0:
        raise CliError(f"--duration must be positive, got {args.duration}")
    if not args.rate > 0:
        raise CliError(f"--rate must be positive, got {args.rate}")
    if not args.no_top and not sys.stdout.isatty():
        announce("stdout is not a terminal, so no live view: running as --no-top "
                 "(a summary at the end)")
        args.no_top = True
    if args.no_top and args.duration is None:
        args.duration = NO_TOP_DURATION


NO_REDIS = (
    "no Redis to run the demo on: none configured (--url or $ACTORSTREAM_REDIS_URL) and no "
    "redis-server to start (install Redis, or pip install 'actorstream[embedded]')"
)


def _usable_url(args: argparse.Namespace) -> str | None:
    """The configured Redis if it answers; None for an embedded one.

    Only a Redis from the environment that does not answer falls back to an embedded one (so
    the README's two commands work with a stale variable); a ``--url`` given on the command line
    must work, and credentials or a database that Redis refuses are an error wherever they
    come from: the demo never quietly runs somewhere the user did not ask for.
    """
    url = configured_url(args)
    if url is None:
        return None
    try:
        trio.run(check_reachable, url)
    except CliError as exc:
        if getattr(args, "url", None) or not exc.transient:
            raise
        announce(f"{exc.message}; starting an embedded redis-server instead",
                 level=logging.WARNING)
        return None
    return url


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    module = import_module(args.app)
    system = getattr(module, "system", None)
    produce = getattr(module, "produce", None)
    module_any: Any = module
    if not isinstance(system, System) or produce is None:
        raise CliError(f"{args.app}: a demo app needs `system` (a System) and `produce(rate)`")
    url = _usable_url(args)
    with contextlib.ExitStack() as stack:
        if url is None:
            try:
                embedded = stack.enter_context(EmbeddedRedis())
            except RuntimeError:
                raise CliError(NO_REDIS, EXIT_FAILURE) from None
            url = embedded.url
            announce(f"embedded redis-server at {url} ({embedded.binary})")
        system.redis_url = url
        # The demo owns the signals: it stops producer, top and worker together.
        system.settings = attrs.evolve(system.settings, install_signal_handlers=False)
        return trio.run(_demo, system, module_any, url, args)
    return EXIT_FAILURE  # pragma: no cover - ExitStack does not swallow exceptions


async def _demo(system: System, module: Any, url: str, args: argparse.Namespace) -> int:
    from ._top import live

    stop = trio.Event()
    worker_done = trio.Event()

    async def signals(outer: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                if stop.is_set():
                    outer.cancel_scope.cancel()  # a second signal: stop now
                    return
                stop.set()

    async def worker(*, task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await system.start(task_status=task_status)
        finally:
            worker_done.set()

    async def top() -> None:
        layout = [
            LayoutEntry(s.name, s.stream.name, s.stream.partitions)
            for s in system.actors.values()
        ]
        async with Client.from_url(url, client_name="actorstream:top") as client:
            poller = Poller(client, system.name, layout, url=redact_url(url))
            await live(poller, ViewOptions(), 1.0)
        stop.set()  # q pressed

    async with system, trio.open_nursery() as outer:
        outer.start_soon(signals, outer)
        runtime: Worker = await outer.start(worker)
        if args.no_top:
            announce(f"demo running on {redact_url(url)} for {args.duration:g}s "
                     "(Ctrl-C stops it)")
        async with trio.open_nursery() as inner:
            inner.start_soon(module.produce, args.rate)
            if not args.no_top:
                inner.start_soon(top)
            with trio.move_on_after(args.duration if args.duration is not None else math.inf):
                await stop.wait()
            inner.cancel_scope.cancel()
        runtime.request_stop()
        await worker_done.wait()
        outer.cancel_scope.cancel()
    final = runtime.statistics()
    sent = getattr(module, "stats", {}).get("sent", "?")
    print(
        f"demo: sent {sent} orders, processed "
        f"{sum(p.processed for p in final.partitions)}, restarts "
        f"{final.supervisor.total_restarts}, dead letters {final.dead_lettered}"
    )
    return EXIT_OK if runtime.gave_up is None else EXIT_FAILURE
