"""``actorstream top TARGET|APP``: a live view of an app, refreshed by a trio task."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import trio
from rich.console import Console
from rich.live import Live

from .._core.exits import EXIT_OK
from .._top import FILTERS, SORTS, Poller, Snapshot, ViewOptions, render_frame
from ._common import CliError, add_command, run_async
from ._status import add_app_argument, open_poller, resolve_app


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers,
        "top",
        "live view of workers, partitions, lag and dead letters",
        "A live, read-only view of an app: workers (heartbeat, partitions, rate), "
        "partitions (owner, epoch, state, lag, pending, processed/s, restarts, dead letters), "
        "stream totals, the coordinator and recent events. One Redis pipeline per refresh, "
        "whatever the event rate. Keys: q quit, s sort, r reverse, f filter (all/problems), "
        "n/p page; Ctrl-C quits too.",
        parents=[common],
        handler=run,
    )
    add_app_argument(parser)
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument(
        "-n", "--interval", type=float, default=1.0, metavar="SECONDS",
        help="refresh interval (default 1)",
    )
    parser.add_argument("--sort", choices=SORTS, default="partition", help="partition order")
    parser.add_argument(
        "--filter", default="all", metavar="all|problems|TEXT",
        help="show all partitions, only problems, or those matching TEXT",
    )


def run(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise CliError(f"--interval must be positive, got {args.interval}")
    app, url, layout = resolve_app(args)
    options = ViewOptions(sort=args.sort, filter=args.filter)

    async def main() -> int:
        async with open_poller(app, url, layout) as poller:
            if args.once:
                # A first poll primes the rates; the second one has them.
                await poller.poll()
                await trio.sleep(min(args.interval, 1.0))
                snap = await poller.poll()
                console = Console(highlight=False)
                # Into a pipe or a file, a frame need not fit a screen: print it all.
                height = console.height if console.is_terminal else None
                console.print(render_frame(snap, console.width, height, options))
                return EXIT_OK
            await live(poller, options, args.interval)
        return EXIT_OK

    return run_async(main, url=url)


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[bool]:
    """Put the terminal in cbreak mode (keys arrive one by one, no echo); restore it after."""
    try:
        import termios
        import tty

        old = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):
        yield False
        return
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def apply_key(key: str, options: ViewOptions) -> bool:
    """Change the view for one key press; False means quit."""
    if key in ("q", "Q", "\x03"):
        return False
    if key == "s":
        options.sort = SORTS[(SORTS.index(options.sort) + 1) % len(SORTS)]
        options.page = 0
    elif key == "r":
        options.reverse = not options.reverse
    elif key == "f":
        current = options.filter if options.filter in FILTERS else "all"
        options.filter = FILTERS[(FILTERS.index(current) + 1) % len(FILTERS)]
        options.page = 0
    elif key in ("n", " "):
        options.page += 1
    elif key == "p":
        options.page = max(0, options.page - 1)
    return True


async def live(poller: Poller, options: ViewOptions, interval: float) -> None:
    console = Console(highlight=False)
    redraw = trio.Event()
    snap: Snapshot | None = None
    async with trio.open_nursery() as nursery:
        with Live(console=console, auto_refresh=False, screen=True, transient=True) as view:

            def draw() -> None:
                if snap is not None:
                    view.update(
                        render_frame(snap, console.width, console.height, options, keys=True),
                        refresh=True,
                    )

            async def keyboard() -> None:
                nonlocal redraw
                if not sys.stdin.isatty():
                    return
                fd = sys.stdin.fileno()
                with _cbreak(fd) as ok:
                    if not ok:
                        return
                    stream = trio.lowlevel.FdStream(os.dup(fd))
                    async with stream:
                        while True:
                            data = await stream.receive_some(16)
                            if not data:
                                return
                            for key in data.decode(errors="ignore"):
                                if not apply_key(key, options):
                                    nursery.cancel_scope.cancel()
                                    return
                            redraw.set()

            async def interrupt() -> None:
                # Ctrl-C quits like q: the screen restored, exit 0, no traceback.
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(interrupt)
            nursery.start_soon(keyboard)
            while True:
                snap = await poller.poll()
                draw()
                with trio.move_on_after(interval):
                    while True:
                        await redraw.wait()
                        redraw = trio.Event()
                        draw()
