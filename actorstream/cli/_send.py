"""``actorstream send TARGET JSON...`` / ``--file events.jsonl``: validate everything, then send."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._core.errors import ActorstreamError, DecodeError
from .._core.exits import EXIT_FAILURE, EXIT_OK
from .._records import from_primitive, record_fields, to_primitive
from .._streams import SendError, Stream
from .._transport import redact_url
from ._common import (
    CliError,
    add_command,
    check_reachable,
    load_stream,
    resolve_url,
    run_async,
    system_of,
)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers,
        "send",
        "send events (JSON) to a stream",
        "Send events to a stream. Every event is validated against the stream's "
        "record type first; if any is bad, nothing is sent and the error names its line and "
        "field. If Redis refuses some events, the exact lines that were sent are listed.",
        parents=[common],
        epilog="examples:\n"
        "  actorstream send app:orders '{\"order_id\": 1, \"amount\": 5}' '{\"order_id\": 2, "
        "\"amount\": 7}'\n"
        "  actorstream send shop:orders --file orders.jsonl     (one JSON object a line; "
        "- is stdin)",
        target="module:stream (a Stream attribute, or the name of a stream of the module's System)",
        handler=run,
    )
    parser.add_argument("events", metavar="JSON", nargs="*", help="events, one JSON object each")
    parser.add_argument(
        "-f", "--file", metavar="PATH", help="read events from a JSON-lines file (- for stdin)"
    )
    parser.add_argument(
        "--print-ids", action="store_true",
        help="print each event's partition and entry id (ids are per partition), e.g. "
        "'orders[3] 1714557600000-0', one line per event in input order",
    )
    parser.add_argument(
        "--allow-unknown", action="store_true",
        help="drop fields the stream's record type does not have (default: reject the event, "
        "so a typo does not vanish)",
    )
    parser.set_defaults(more_values="events")


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


def unknown_fields(data: Any, known: Any, path: str = "") -> list[str]:
    """Paths in ``data`` that its record's round trip (``known``) does not have."""
    if isinstance(data, dict) and isinstance(known, dict):
        out: list[str] = []
        for key, value in data.items():
            if key not in known:
                out.append(f"{path}{key}")
            else:
                out += unknown_fields(value, known[key], f"{path}{key}.")
        return out
    if isinstance(data, list) and isinstance(known, list) and len(data) == len(known):
        base = path.rstrip(".")
        return [u for i, (d, k) in enumerate(zip(data, known, strict=True))
                for u in unknown_fields(d, k, f"{base}[{i}].")]
    return []


def parse_event(stream: Stream[Any], where: str, text: str, *,
                allow_unknown: bool = False) -> Any:
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
        unknown = [] if allow_unknown else unknown_fields(data, to_primitive(event))
        if unknown:
            names = ", ".join(repr(u) for u in unknown)
            fields = ", ".join(record_fields(stream.record))
            raise CliError(
                f"{where}: unknown field(s) {names} for {stream.record.__name__} "
                f"(fields: {fields}); --allow-unknown drops them"
            )
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
    system = system_of(stream)
    inputs = read_inputs(args)
    events = [parse_event(stream, where, text, allow_unknown=args.allow_unknown)
              for where, text in inputs]
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
            for event, entry_id in zip(events, ids, strict=True):
                print(f"{stream.name}[{stream.partition_of(event)}] {entry_id}")
        print(
            f"sent {len(ids)} event(s) to {system.name}:{stream.name} at "
            f"{redact_url(system.redis_url)}",
            file=sys.stderr,
        )
        return EXIT_OK

    return run_async(main, url=system.redis_url)

