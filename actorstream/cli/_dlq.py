"""``actorstream dlq list|show|counts|replay|purge TARGET``: operate on an app's dead letters."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs

from .._core.deadletter import DeadLetter
from .._core.errors import ConfigError
from .._core.exits import EXIT_FAILURE, EXIT_OK
from .._streams import Stream
from .._system import System
from .._transport import Client, redact_url
from ..dlq import (
    DeadLetterSource,
    Selection,
    count_dead_letters,
    dead_letter_to_json,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
    show_dead_letter,
)
from ._common import (
    CliError,
    add_command,
    check_reachable,
    import_module,
    load_system,
    resolve_url,
    run_async,
    split_target,
    system_of,
)

T = TypeVar("T")

EPILOG = """\
TARGET is module:system, or module:stream to work on one stream only.
Times (--since/--until) are ISO 8601 (2024-05-01T12:00, 2024-05-01T12:00:00Z; no zone means
local time), or a duration ago: 90s, 15m, 2h, 7d.

examples:
  actorstream dlq list shop.app:system --kind decode --since 2h
  actorstream dlq show shop.app:system 1714557600000-0
  actorstream dlq replay shop.app:orders --actor bill --dry-run
  actorstream dlq purge shop.app:system --until 7d --yes
"""


def filters(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--partition", metavar="P", type=int, help="only this partition")
    sub.add_argument("--actor", metavar="A", help="only dead letters of this actor")
    sub.add_argument(
        "--kind", metavar="K",
        help="only this kind: max_deliveries, decode (any decode:*), decode:json, ...",
    )
    sub.add_argument(
        "--error", metavar="TEXT",
        help="only those whose error or traceback contains TEXT (e.g. an exception type)",
    )
    sub.add_argument("--since", metavar="TIME", help="dead-lettered at or after TIME")
    sub.add_argument("--until", metavar="TIME", help="dead-lettered at or before TIME")


Command = Callable[[str, str, str], argparse.ArgumentParser]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers,
        "dlq",
        "list, show, replay or purge dead letters",
        "Dead letters: events that could not be decoded, or were delivered more "
        "than max_deliveries times. They are kept per partition; replay sends them back, "
        "untouched, to the partition they came from.",
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    parser.set_defaults(handler=lambda _args: _usage(parser))

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = add_command(commands, name, help_text, description, parents=[common], epilog=EPILOG,
                          target="module:system or module:stream")
        sub.add_argument("--stream", metavar="S", help="only this stream")
        sub.add_argument("--json", action="store_true", help="print JSON")
        return sub

    sub = command("list", "list dead letters", "List dead letters, oldest first.")
    filters(sub)
    sub.add_argument("--limit", type=int, default=100, help="at most N (default 100; 0: all)")
    sub.set_defaults(handler=run_list)

    sub = command(
        "show", "show dead letters in full",
        "Show a dead letter in full: its original fields, error and traceback. ID is its "
        "dead-letter id or the original entry id.",
    )
    sub.add_argument("ids", metavar="ID", nargs="+", help="dead-letter id or original entry id")
    sub.set_defaults(handler=run_show)

    sub = command(
        "counts", "count dead letters per stream, partition and kind",
        "Count dead letters per stream, partition and kind.",
    )
    sub.set_defaults(handler=run_counts)

    _register_changes(command)


def _register_changes(command: Command) -> None:
    """The commands that change dead letters: replay and purge."""
    sub = command(
        "replay", "send dead letters back to their partitions",
        "Send the selected dead letters back, with their original fields untouched, to the "
        "partition they came from (so their key keeps its partition). Each is appended as a new "
        "entry and removed from the dead letters in one atomic step.",
    )
    filters(sub)
    sub.add_argument("--id", dest="ids", metavar="ID", action="append",
                     help="only this dead-letter id (repeatable)")
    sub.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    sub.set_defaults(handler=run_replay)

    sub = command(
        "purge", "delete dead letters",
        "Delete the selected dead letters for good. Asks for confirmation unless --yes.",
    )
    filters(sub)
    sub.add_argument("--id", dest="ids", metavar="ID", action="append",
                     help="only this dead-letter id (repeatable)")
    sub.add_argument("--dry-run", action="store_true", help="show what would be purged")
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    sub.set_defaults(handler=run_purge)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# -- arguments ---------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, option: str, now: dt.datetime | None = None) -> int:
    """ISO 8601 (local time when no zone is given) or a duration ago, as unix ms."""
    text = text.strip()
    now = now or dt.datetime.now(dt.UTC)
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return int((now - dt.timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{option} {text!r}: expected an ISO 8601 time (2024-05-01T12:00:00Z) or a "
            "duration ago (90s, 15m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return int(when.timestamp() * 1000)


def resolve_target(args: argparse.Namespace) -> tuple[System, str | None]:
    """The System and the stream TARGET (or --stream) names, checked against the app."""
    module_name, attr = split_target(args.target)
    value = getattr(import_module(module_name), attr, None)
    stream: str | None = None
    if isinstance(value, Stream):
        system = system_of(value)
        stream = value.name
    else:
        system = load_system(args.target)
    wanted = getattr(args, "stream", None)
    if wanted is not None:
        if stream is not None and wanted != stream:
            raise CliError(f"TARGET names stream {stream!r} but --stream says {wanted!r}")
        stream = wanted
    if stream is not None and stream not in system.streams:
        known = ", ".join(sorted(system.streams)) or "none"
        raise CliError(f"unknown stream {stream!r} in app {system.name!r} (streams: {known})")
    actor = getattr(args, "actor", None)
    if actor is not None and actor not in system.actors:
        known = ", ".join(sorted(system.actors)) or "none"
        raise CliError(f"unknown actor {actor!r} in app {system.name!r} (actors: {known})")
    return system, stream


def selection(args: argparse.Namespace, stream: str | None) -> Selection:
    """The options' ``Selection``; bad values are one-line usage errors."""
    since = parse_time(args.since, option="--since") if args.since else None
    until = parse_time(args.until, option="--until") if args.until else None
    if since is not None and until is not None and since > until:
        raise CliError("--since is after --until")
    try:
        return Selection(
            stream=stream, partition=args.partition, actor=args.actor, kind=args.kind,
            error=args.error, since_ms=since, until_ms=until, ids=getattr(args, "ids", None),
        )
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _run(
    args: argparse.Namespace,
    body: Callable[[Client, DeadLetterSource, System, str | None], Awaitable[T]],
) -> T:
    system, stream = resolve_target(args)
    url = resolve_url(args, system)
    source = DeadLetterSource.of(system)

    async def main() -> T:
        await check_reachable(url)
        async with Client.from_url(url) as client:
            try:
                return await body(client, source, system, stream)
            except ConfigError as exc:
                raise CliError(str(exc)) from None

    return run_async(main, url=url)


# -- output ------------------------------------------------------------------------------------


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _one_line(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _line(dl: DeadLetter) -> str:
    return (
        f"{dl.dlq_id:<16} {dl.stream}[{dl.partition}] {dl.actor:<12} {dl.kind:<16} "
        f"{_when(dl.time_ms)} id={dl.original_id} deliveries={dl.deliveries}  "
        f"{_one_line(dl.error)}"
    )


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _describe(dl: DeadLetter) -> str:
    data = dead_letter_to_json(dl)
    lines = [
        f"dead letter {dl.dlq_id} of {dl.stream}[{dl.partition}]",
        f"  original id   {dl.original_id}",
        f"  actor         {dl.actor}",
        f"  kind          {dl.kind}",
        f"  error         {dl.error}",
        f"  deliveries    {dl.deliveries}",
        f"  worker        {dl.worker} (epoch {dl.epoch})",
        f"  time          {_when(dl.time_ms)}",
        "  fields:",
    ]
    for field in data["fields"]:
        name = field.get("name", "base64:" + field.get("name_base64", ""))
        value = field.get("value")
        shown = repr(value) if value is not None else f"base64:{field['value_base64']}"
        lines.append(f"    {name} = {_one_line(shown, 200)}")
    if dl.trace:
        lines.append("  trace:")
        lines.extend("    " + line for line in dl.trace.rstrip().splitlines())
    return "\n".join(lines)


def _scope(system: System, stream: str | None) -> str:
    return f"{system.name}:{stream}" if stream else system.name


# -- commands ----------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CliError("--limit must be >= 0")

    async def body(
        client: Client, source: DeadLetterSource, system: System, stream: str | None
    ) -> int:
        letters = await list_dead_letters(
            source, selection(args, stream), client=client, limit=args.limit or None
        )
        if args.json:
            _print_json([dead_letter_to_json(dl) for dl in letters])
        else:
            for dl in letters:
                print(_line(dl))
            more = " (limit reached; --limit 0 for all)" if len(letters) == args.limit else ""
            print(
                f"{len(letters)} dead letter(s) in {_scope(system, stream)}{more}",
                file=sys.stderr,
            )
        return EXIT_OK

    return _run(args, body)


def run_show(args: argparse.Namespace) -> int:
    async def body(
        client: Client, source: DeadLetterSource, system: System, stream: str | None
    ) -> int:
        found: list[DeadLetter] = []
        missing: list[str] = []
        for ref in args.ids:
            hits = await show_dead_letter(source, ref, client=client, stream=stream)
            found.extend(hits)
            if not hits:
                missing.append(ref)
        if args.json:
            _print_json([dead_letter_to_json(dl) for dl in found])
        else:
            print("\n\n".join(_describe(dl) for dl in found))
        if missing:
            print(
                f"actorstream: error: no dead letter {', '.join(missing)} in "
                f"{_scope(system, stream)}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        return EXIT_OK

    return _run(args, body)


def run_counts(args: argparse.Namespace) -> int:
    async def body(
        client: Client, source: DeadLetterSource, system: System, stream: str | None
    ) -> int:
        counts = await count_dead_letters(source, client=client, stream=stream)
        if args.json:
            _print_json(
                [
                    {"stream": c.stream, "partition": c.partition, "kind": c.kind,
                     "count": c.count}
                    for c in counts
                ]
            )
            return EXIT_OK
        for c in counts:
            print(f"{c.stream}[{c.partition}]  {c.kind:<20} {c.count}")
        total = sum(c.count for c in counts)
        print(f"{total} dead letter(s) in {_scope(system, stream)}", file=sys.stderr)
        return EXIT_OK

    return _run(args, body)


def run_replay(args: argparse.Namespace) -> int:
    async def body(
        client: Client, source: DeadLetterSource, system: System, stream: str | None
    ) -> int:
        report = await replay_dead_letters(
            source, selection(args, stream), client=client, dry_run=args.dry_run
        )
        if args.json:
            _print_json(
                {
                    "dry_run": report.dry_run,
                    "replayed": [
                        {"dlq_id": dl.dlq_id, "stream": dl.stream, "partition": dl.partition,
                         "original_id": dl.original_id, "new_id": new_id}
                        for dl, new_id in report.replayed
                    ],
                    "skipped": [dl.dlq_id for dl in report.skipped],
                }
            )
            return EXIT_OK
        verb = "would replay" if report.dry_run else "replayed"
        for dl, new_id in report.replayed:
            target = f" as {new_id}" if new_id else ""
            print(f"{verb} {dl.dlq_id} -> {dl.stream}[{dl.partition}]{target} ({dl.kind})")
        for dl in report.skipped:
            print(f"skipped {dl.dlq_id}: gone (replayed or purged meanwhile)")
        print(
            f"{verb} {len(report.replayed)} dead letter(s) of {_scope(system, stream)} at "
            f"{redact_url(resolve_url(args, system))}",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run(args, body)


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")


def run_purge(args: argparse.Namespace) -> int:
    async def body(
        client: Client, source: DeadLetterSource, system: System, stream: str | None
    ) -> int:
        chosen = selection(args, stream)
        if not args.yes and not args.dry_run:
            preview = await purge_dead_letters(source, chosen, client=client, dry_run=True)
            if not preview.selected:
                print(f"nothing to purge in {_scope(system, stream)}", file=sys.stderr)
                return EXIT_OK
            question = (
                f"purge {len(preview.selected)} dead letter(s) of {_scope(system, stream)} "
                "for good?"
            )
            # Ask in a worker thread: stdin blocks.
            import trio

            if not await trio.to_thread.run_sync(_confirm, question):
                print("aborted; nothing purged", file=sys.stderr)
                return EXIT_FAILURE
            # Exactly what was shown, not what arrived since.
            chosen = attrs.evolve(chosen, ids=[dl.dlq_id for dl in preview.selected])
        report = await purge_dead_letters(source, chosen, client=client, dry_run=args.dry_run)
        if args.json:
            _print_json(
                {
                    "dry_run": report.dry_run,
                    "purged": report.purged,
                    "selected": [dl.dlq_id for dl in report.selected],
                }
            )
            return EXIT_OK
        if report.dry_run:
            for dl in report.selected:
                print(f"would purge {_line(dl)}")
            print(f"would purge {report.purged} dead letter(s)", file=sys.stderr)
        else:
            print(f"purged {report.purged} dead letter(s) of {_scope(system, stream)}",
                  file=sys.stderr)
        return EXIT_OK

    return _run(args, body)
