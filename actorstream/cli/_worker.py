"""``actorstream worker TARGET``: run one worker of a System until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import trio

from .._core.errors import SupervisorGaveUp
from .._transport import redact_url
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    check_reachable,
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
        "system gave up (restart intensity exceeded), 3 if Redis is unreachable at start.",
    )
    parser.add_argument("target", metavar="TARGET", help="module:system, e.g. myapp:system")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    system = load_system(args.target)
    system.redis_url = resolve_url(args, system)

    async def main() -> int:
        await check_reachable(system.redis_url)
        print(
            f"actorstream: worker of {system.name!r} (pid {os.getpid()}) on "
            f"{redact_url(system.redis_url)}, {len(system.actors)} actor(s); Ctrl-C to stop",
            file=sys.stderr, flush=True,
        )
        try:
            await system.start()
        except* SupervisorGaveUp as group:
            raise CliError(f"the system gave up: {group.exceptions[0]}", EXIT_FAILURE) from None
        if system.forced_exit:
            # Like a shell's Ctrl-C: the drain was cut short (leases lapse by TTL instead).
            print(f"actorstream: worker of {system.name!r} stopped by a second signal",
                  file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        print(f"actorstream: worker of {system.name!r} stopped", file=sys.stderr, flush=True)
        return EXIT_OK

    return trio.run(main)
