"""``actorstream send TARGET JSON...`` / ``--file events.jsonl``: validate everything, then send."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._core.errors import ActorstreamError, DecodeError
from .._records import from_primitive
from .._streams import SendError, Stream
from .._transport import redact_url
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    check_reachable,
    load_stream,
    resolve_url,
    run_async,
)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "send",
        parents=[common],
        help="send events (JSON) to a stream",
        description="Send events to a stream. Every event is validated against the stream's "
        "record type first; if any is bad, nothing is sent and the error names its line and "
        "field. If Redis refuses some events, the exact lines that were sent are listed.",
        epilog="examples:\n"
        "  actorstream send shop:orders '{\"order_id\": 1, \"amount\": 5}'\n"
        "  actorstream send shop:orders --file orders.jsonl     (one JSON object a line; "
        "- is stdin)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target", metavar="TARGET",
        help="module:stream (a Stream attribute, or the name of a stream of the module's System)",
    )
    parser.add_argument("events", metavar="JSON", nargs="*", help="events, one JSON object each")
    parser.add_argument(
        "-f", "--file", metavar="PATH", help="read events from a JSON-lines file (- for stdin)"
    )
    parser.add_argument(
        "--print-ids", action="store_true", help="print the entry id of each event sent"
    )
    parser.set_defaults(handler=run)


def read_inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(where, text) of every event: ``argument N`` or ``line N`` (blank lines skipped)."""
    if args.file and args.events:
        raise CliError("give events as arguments or with --file, not both")
    if args.file:
        try:
            if args.file == "-":
                text = sys.stdin.read()
            else:
                with open(args.file, encoding="utf-8") as f:
                    text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from None
        name = "stdin" if args.file == "-" else args.file
        return [
            (f"{name} line {n}", line)
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    if not args.events:
        raise CliError("no events: give JSON arguments or --file PATH")
    return [(f"argument {n}", text) for n, text in enumerate(args.events, 1)]


def parse_event(stream: Stream[Any], where: str, text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}: bad JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"{where}: an event must be a JSON object, got {type(data).__name__}")
    event: Any = data
    if stream.record is not None:
        try:
            event = from_primitive(stream.record, data)
        except DecodeError as exc:
            raise CliError(f"{where}: bad {stream.record.__name__}: {exc}") from None
    try:
        stream._command(event)  # encodes and checks the key; sends nothing
    except (ActorstreamError, ValueError, TypeError, KeyError) as exc:
        raise CliError(f"{where}: cannot send to {stream.name!r}: {exc}") from None
    return event


def _ranges(wheres: list[str]) -> str:
    if len(wheres) <= 6:
        return ", ".join(wheres)
    return f"{', '.join(wheres[:3])}, ..., {', '.join(wheres[-2:])}"


def run(args: argparse.Namespace) -> int:
    stream = load_stream(args.target)
    system = stream.system
    inputs = read_inputs(args)
    events = [parse_event(stream, where, text) for where, text in inputs]
    system.redis_url = resolve_url(args, system)

    async def main() -> int:
        await check_reachable(system.redis_url)
        async with system:
            try:
                ids = await stream.send_many(events)
            except SendError as exc:
                sent = [inputs[i][0] for i, _ in exc.sent]
                failed = [inputs[i][0] for i, _ in exc.failed]
                first = exc.failed[0][1] if exc.failed else None
                print(
                    f"actorstream: error: sent {len(sent)} of {len(events)} event(s) to "
                    f"{system.name}:{stream.name}; NOT sent: {len(failed)} "
                    f"({type(first).__name__}: {first})",
                    file=sys.stderr,
                )
                print(f"not sent: {_ranges(failed)}", file=sys.stderr)
                if sent:
                    print("sent (in Redis now):", file=sys.stderr)
                    for i, entry_id in exc.sent:
                        print(f"  {inputs[i][0]} -> {entry_id}", file=sys.stderr)
                return EXIT_FAILURE
        if args.print_ids:
            for entry_id in ids:
                print(entry_id)
        print(
            f"sent {len(ids)} event(s) to {system.name}:{stream.name} at "
            f"{redact_url(system.redis_url)}",
            file=sys.stderr,
        )
        return EXIT_OK

    return run_async(main, url=system.redis_url)

