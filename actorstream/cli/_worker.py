"""``actorstream worker TARGET``: run one worker of a System until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import trio

from .._core.errors import SupervisorGaveUp
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
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


def run(args: argparse.Namespace) -> int:
    system = load_system(args.target)
    system.redis_url = resolve_url(args, system)

    async def main() -> int:
        # System.start waits for Redis and prints the start and stop lines, as `python app.py`.
        try:
            await system.start()
        except* SupervisorGaveUp as group:
            raise CliError(f"the system gave up: {group.exceptions[0]}", EXIT_FAILURE) from None
        # Like a shell's Ctrl-C: the drain was cut short (leases lapse by TTL instead).
        return EXIT_INTERRUPTED if system.forced_exit else EXIT_OK

    return trio.run(main)
