"""The ``actorstream`` command line: worker, send, status, top, demo (and dlq, when present).

Each subcommand lives in a module of this package with a ``register(subparsers, common)``
function that adds its parser and sets ``handler=<fn(args) -> int>`` as a default. To add one,
write the module and list it in ``SUBCOMMANDS``; a listed module that does not exist (yet) is
skipped, so ``_dlq`` can land on its own.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .._core.exits import EXIT_INTERRUPTED, EXIT_USAGE, TRACEBACK_ENV, classify_exit, leaves
from .._ops.logs import configure_logging
from .._version import __version__
from ._common import CliError, add_url_option

__all__ = ["build_parser", "main"]

#: Subcommand modules, in --help order.
SUBCOMMANDS = ("_worker", "_send", "_status", "_top", "_dlq", "_demo", "_table")

DESCRIPTION = """\
Event processing on Redis Streams, with trio and a supervision tree.

A TARGET is module:attribute, e.g. myapp.workers:system or path/to/app.py:system
(the current directory is importable). The Redis URL comes from --url, else
the redis_url the app's System is given in code, else $ACTORSTREAM_REDIS_URL,
else redis://127.0.0.1:6379/0.

exit codes: 0 ok, 1 runtime failure (or the system gave up), 2 usage, bad
input or configuration, 3 Redis unreachable or refusing the credentials, 130
interrupted. -v (or ACTORSTREAM_TRACEBACK=1) adds the traceback to an error.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actorstream",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"actorstream {__version__}")
    add_url_option(parser, top_level=True)
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="more logging on stderr (-v info, -vv debug)",
    )
    common = argparse.ArgumentParser(add_help=False)
    add_url_option(common)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS,
        help="more logging on stderr (-v info, -vv debug)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.register(subparsers, common)
    return parser


def _setup_logging(verbosity: int) -> None:
    """One log format for every command (a worker's own ``--log-format`` may change it)."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    configure_logging(level=level)
    if verbosity > 0:
        # System.start prints the traceback under its one line too (see _core/exits).
        os.environ[TRACEBACK_ENV] = "1"


def _classify(exc: BaseException) -> CliError | None:
    """Known failures, however deep in exception groups, as one line and an exit code."""
    for leaf in leaves(exc):
        if isinstance(leaf, CliError):
            return leaf
    found = classify_exit(exc)
    if found is None:
        return None
    return CliError(found.message, found.code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actorstream`` script; returns (and ``sys.exit``s with) a code."""
    code = _main(argv)
    if argv is None:
        sys.exit(code)
    return code


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; a command that takes many values (``send``'s JSON) also gets those after options.

    argparse fills a ``nargs="*"`` positional once, so ``send T '{..}' --print-ids '{..}'``
    would leave the second event unrecognized.
    """
    args, extras = parser.parse_known_args(argv)
    dest = getattr(args, "more_values", None)
    if extras and (dest is None or any(e.startswith("-") for e in extras)):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if extras and dest is not None:
        getattr(args, dest).extend(extras)
    return args


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.verbose)
    try:
        result: int = handler(args)
        return result
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        if isinstance(exc, BaseExceptionGroup) and all(
            isinstance(leaf, KeyboardInterrupt) for leaf in leaves(exc)
        ):
            return EXIT_INTERRUPTED  # a Ctrl-C that landed inside a nursery
        known = _classify(exc)
        if known is None:
            raise
        cause = known.__cause__
        if cause is not None and args.verbose > 0:
            traceback.print_exception(cause, file=sys.stderr)
        hint = " (-v shows the traceback)" if cause is not None and not args.verbose else ""
        print(f"actorstream: error: {known.message}{hint}", file=sys.stderr)
        return known.code
