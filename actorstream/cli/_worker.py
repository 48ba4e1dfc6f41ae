"""``actorstream worker TARGET``: run one worker of a System until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import trio

from .._core.errors import ConfigError, SupervisorGaveUp
from .._core.failures import describe_error
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    check_reachable,
    load_system,
    resolve_url,
    show_url,
)

log = logging.getLogger("actorstream.cli")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "worker",
        parents=[common],
        help="run a worker of a System",
        description="Run one worker of a System: it joins the membership, takes its share of "
        "the partitions and processes them until SIGINT/SIGTERM (a first signal drains "
        "gracefully, a second one exits at once). Exit 0 after a graceful stop, 1 if the "
        "system gave up (restart intensity exceeded), 3 if Redis is unreachable at start.",
    )
    parser.add_argument("target", metavar="TARGET", help="module:system, e.g. myapp:system")
    parser.set_defaults(handler=run)


def _leaf(exc: BaseException, last: bool = False) -> BaseException:
    """The first (or last) exception inside nested groups (``except*`` keeps the nesting)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[-1 if last else 0]
    return exc


def _last_leaf(exc: BaseException) -> str:
    return describe_error(_leaf(exc, last=True))


def _gave_up_line(gave_up: BaseException) -> str:
    """One line: which supervisor gave up, and the last crash that made it."""
    cause = gave_up.__cause__
    last = f"; last crash: {_last_leaf(cause)}" if cause is not None else ""
    hint = "" if log.isEnabledFor(logging.INFO) else " (-v shows the whole trace)"
    return f"{gave_up}{last}{hint}"


def _trace_if_verbose(exc: BaseException) -> None:
    if log.isEnabledFor(logging.INFO):
        log.error("the worker failed", exc_info=exc)


def run(args: argparse.Namespace) -> int:
    system = load_system(args.target)
    system.redis_url = resolve_url(args, system)

    async def main() -> int:
        await check_reachable(system.redis_url)
        print(
            f"actorstream: worker of {system.name!r} (pid {os.getpid()}) on "
            f"{show_url(system.redis_url)}, {len(system.actors)} actor(s); Ctrl-C to stop",
            file=sys.stderr, flush=True,
        )
        try:
            await system.start()
        except* ConfigError as group:
            raise CliError(str(_leaf(group)), EXIT_USAGE) from None
        except* SupervisorGaveUp as group:
            gave_up = _leaf(group)
            _trace_if_verbose(gave_up)
            raise CliError(_gave_up_line(gave_up), EXIT_FAILURE) from None
        except* Exception as group:
            _trace_if_verbose(group)
            raise CliError(
                f"the worker of {system.name!r} failed: {_last_leaf(group)} (a failure of "
                "the runtime itself, not of a handler; -v shows the whole trace)", EXIT_FAILURE,
            ) from None
        if system.forced_exit:
            # Like a shell's Ctrl-C: the drain was cut short (leases lapse by TTL instead).
            print(f"actorstream: worker of {system.name!r} stopped by a second signal",
                  file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        print(f"actorstream: worker of {system.name!r} stopped", file=sys.stderr, flush=True)
        return EXIT_OK

    return trio.run(main)
