"""``actorstream worker TARGET``: run one worker of a System until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import trio

from .._core.crashes import describe_error
from .._core.errors import ConfigError, SupervisorGaveUp
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UNREACHABLE,
    CliError,
    load_system,
    resolve_url,
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
        "system gave up (restart intensity exceeded). While Redis does not answer at start it "
        "waits, backing off, and says so once.",
    )
    parser.add_argument("target", metavar="TARGET", help="module:system, e.g. myapp:system")
    parser.set_defaults(handler=run)


def _leaf(exc: BaseException, last: bool = False) -> BaseException:
    """The first (or last) exception inside nested groups (``except*`` keeps the nesting)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[-1 if last else 0]
    return exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _gave_up_line(gave_up: BaseException) -> str:
    """One line: which supervisor gave up, and the last crash that made it."""
    cause = gave_up.__cause__
    last = f"; last crash: {describe_error(_leaf(cause, last=True))}" if cause else ""
    return f"{gave_up}{last}"


def run(args: argparse.Namespace) -> int:
    system = load_system(args.target)
    system.redis_url = resolve_url(args, system)

    async def main() -> int:
        # System.start waits for Redis and prints the start and stop lines, as `python app.py`.
        try:
            await system.start()
        except* ConfigError as group:
            raise CliError(str(_leaf(group)), EXIT_USAGE) from None
        except* SupervisorGaveUp as group:
            gave_up = _leaf(group)
            raise CliError(_gave_up_line(gave_up), EXIT_FAILURE) from gave_up
        except* Exception as group:
            if all(isinstance(leaf, UNREACHABLE) for leaf in _leaves(group)):
                raise  # Redis unreachable at the start: exit 3, as `_classify` says
            leaf = _leaf(group, last=True)
            raise CliError(
                f"the worker of {system.name!r} failed: {describe_error(leaf)} (a failure of "
                "the runtime itself, not of a handler)", EXIT_FAILURE,
            ) from leaf
        # Like a shell's Ctrl-C: the drain was cut short (leases lapse by TTL instead).
        return EXIT_INTERRUPTED if system.forced_exit else EXIT_OK

    return trio.run(main)
