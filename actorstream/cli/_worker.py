"""``actorstream worker TARGET``: run one worker of a System until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._core.crashes import describe_error
from .._core.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, classify_exit, leaves
from .._ops.logs import LOG_FORMATS, configure_logging
from ._common import CliError, add_command, load_system, resolve_url

if TYPE_CHECKING:
    from .._system import System

log = logging.getLogger("actorstream.cli")

#: Set by a ``--processes`` parent for its children: a child whose parent is gone drains.
PARENT_PID_ENV = "ACTORSTREAM_PARENT_PID"


async def run_as_child(system: System, parent_pid: int) -> None:
    """A ``--processes`` child: the worker, plus a watch on the parent (see ``watch_parent``)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_parent, parent_pid)
        await system.start()
        nursery.cancel_scope.cancel()


async def watch_parent(parent_pid: int) -> None:
    """Drain (as on SIGTERM) if our ``--processes`` parent died (kill -9 leaves no one to ask)."""
    while os.getppid() == parent_pid:  # noqa: ASYNC110 - a parent's death is not a trio event
        await trio.sleep(0.5)
    log.warning("parent process %d is gone: draining", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers,
        "worker",
        "run a worker of a System",
        "Run one worker of a System: it joins the membership, takes its share of "
        "the partitions and processes them until SIGINT/SIGTERM (a first signal drains "
        "gracefully, a second one exits at once). Exit 0 after a graceful stop, 1 if the "
        "system gave up (restart intensity exceeded). While Redis does not answer at start it "
        "waits, backing off, and says so once.",
        parents=[common],
        target="module:system, e.g. myapp:system",
        handler=run,
    )
    ops = parser.add_argument_group("operations (docs/operations.md)")
    ops.add_argument(
        "--metrics-port", type=int, metavar="PORT", default=None,
        help="serve /metrics (needs actorstream[metrics]), /healthz and /readyz on PORT",
    )
    ops.add_argument(
        "--metrics-host", default="0.0.0.0", metavar="HOST",
        help="address for --metrics-port (default 0.0.0.0: reachable by probes)",
    )
    ops.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text",
        help="text (a timestamp on every line) or json (one object a line)",
    )
    ops.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="run N worker processes under a parent that restarts crashed ones and serves "
        "one metrics endpoint for all (default 1: this process is the worker)",
    )


def run(args: argparse.Namespace) -> int:
    verbosity = getattr(args, "verbose", 0) or 0
    configure_logging(
        level=logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1
        else logging.DEBUG,
        fmt=args.log_format,
    )
    if args.processes < 1:
        raise CliError(f"--processes must be at least 1, got {args.processes}", EXIT_USAGE)
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise CliError(f"--metrics-port must be 0..65535, got {args.metrics_port}", EXIT_USAGE)
    system = load_system(args.target)
    system.redis_url = resolve_url(args, system)
    if args.processes > 1:
        from ._processes import run_parent

        return run_parent(args, system)
    if args.metrics_port is not None:
        system.settings = attrs.evolve(
            system.settings, metrics_port=args.metrics_port, metrics_host=args.metrics_host
        )

    async def main() -> int:
        # System.start waits for Redis, prints the start and stop lines, and ends the process
        # on bad configuration or credentials with one line, as `python app.py` does.
        parent = os.environ.get(PARENT_PID_ENV)
        try:
            if parent:
                await run_as_child(system, int(parent))
            else:
                # No nursery here: a Ctrl-C during start-up must stay a bare KeyboardInterrupt.
                await system.start()
        except* Exception as group:
            if classify_exit(group) is not None:
                raise
            leaf = leaves(group)[-1]
            raise CliError(
                f"the worker of {system.name!r} failed: {describe_error(leaf)} (a failure of "
                "the runtime itself, not of a handler)", EXIT_FAILURE,
            ) from leaf
        # Like a shell's Ctrl-C: the drain was cut short (leases lapse by TTL instead).
        return EXIT_INTERRUPTED if system.forced_exit else EXIT_OK

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        # A Ctrl-C that lands inside a nursery of the starting worker (before its signal
        # handler is installed) arrives wrapped: it is still a Ctrl-C (exit 130), not a crash;
        # so is the SystemExit of a --processes child's System.start.
        exits = [leaf for leaf in leaves(group) if isinstance(leaf, SystemExit)]
        if exits:
            raise exits[0] from None
        if group.split(KeyboardInterrupt)[1] is None:
            raise KeyboardInterrupt from None
        raise
