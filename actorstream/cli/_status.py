"""``actorstream status [--json] TARGET|APP``: a one-shot summary of an app, read from Redis."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .._core.errors import ConfigError
from .._core.exits import EXIT_OK
from .._core.keys import check_name
from .._top import LayoutEntry, Poller, known_apps, status_text
from .._transport import Client, redact_url
from ._common import (
    CliError,
    add_command,
    check_reachable,
    is_target,
    load_system,
    resolve_url,
    run_async,
)


def add_app_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app", metavar="TARGET|APP",
        help="module:system (knows every partition), or an app name (System name): the "
        "layout is then read from the live workers' telemetry",
    )


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers,
        "status",
        "one-shot summary of an app (members, partitions, lag, dead letters)",
        "Print a one-shot summary read from Redis (read-only): workers, every "
        "partition's owner, epoch, state, lag, pending and dead letters, stream totals and "
        "recent events. --json prints the same data as JSON.",
        parents=[common],
        handler=run,
    )
    add_app_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def resolve_app(args: argparse.Namespace) -> tuple[str, str, list[LayoutEntry] | None]:
    """(app name, url, layout or None) from ``module:system`` or an app name."""
    if is_target(args.app):
        system = load_system(args.app)
        layout = [
            LayoutEntry(spec.name, spec.stream.name, spec.stream.partitions)
            for spec in system.actors.values()
        ]
        return system.name, resolve_url(args, system), layout
    try:
        check_name("app", args.app)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return args.app, resolve_url(args), None


@asynccontextmanager
async def open_poller(
    app: str, url: str, layout: list[LayoutEntry] | None
) -> AsyncIterator[Poller]:
    await check_reachable(url)
    try:
        client = Client.from_url(url, client_name="actorstream:top", max_connections=2)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    async with client:
        poller = Poller(client, app, layout, url=redact_url(url))
        if layout is None:
            await _check_app_exists(poller, url)
        yield poller


async def _check_app_exists(poller: Poller, url: str) -> None:
    """An app name with nothing in Redis is a typo far more often than an app to come."""
    snap = await poller.poll()
    if snap.workers or snap.streams or snap.partitions or snap.events:
        return
    apps = await known_apps(poller.client)
    there = f"apps there: {', '.join(apps)}" if apps else "it holds no app's streams"
    raise CliError(
        f"no app {poller.app!r} at {redact_url(url)}: no streams and no workers of that name "
        f"({there}; or pass module:system)"
    )


def run(args: argparse.Namespace) -> int:
    app, url, layout = resolve_app(args)

    async def main() -> int:
        async with open_poller(app, url, layout) as poller:
            snap = await poller.poll()
        if args.json:
            json.dump(snap.to_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            tty = sys.stdout.isatty()
            width = shutil.get_terminal_size((120, 24)).columns if tty else 120
            sys.stdout.write(status_text(snap, width=width, color=tty))
        return EXIT_OK

    return run_async(main, url=url)
