"""``actorstream table TARGET [KEY]``: a table's committed values, read from Redis."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._core.commit import field_of, key_of_field, partition_of_field
from .._core.exits import EXIT_FAILURE, EXIT_OK
from .._records import Record, to_primitive
from .._tables import Table
from .._transport import Client
from .._windows import WindowedTable
from ._common import (
    CliError,
    add_command,
    check_reachable,
    load_declared,
    resolve_url,
    run_async,
)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        subparsers,
        "table",
        "print a table's committed values (one key, or all of them)",
        "Print a table's committed values, read from Redis (read-only): every key "
        "and value, one a line as JSON, or the value of KEY alone (exit 1 if it has none). "
        "A windowed table prints its open windows: key, window and value, one a line.",
        parents=[common],
        epilog="examples:\n"
        "  actorstream table app:counts           (every key)\n"
        "  actorstream table app:counts cust-42   (one key)",
        target="module:table (a Table attribute, or the name of a table of the module's System)",
        handler=run,
    )
    parser.add_argument("key", metavar="KEY", nargs="?", help="one key (as text)")


def load_table(target: str) -> Table[Any]:
    """``module:attr`` naming a Table, or ``module:name`` where name is a table of its System."""
    table: Table[Any] = load_declared(target, Table, "table", lambda system: system.tables)
    return table


def _shown(value: Any) -> str:
    return json.dumps(to_primitive(value) if isinstance(value, Record) else value)


async def _windows(table: WindowedTable[Any], client: Client, key: str | None) -> int:
    """A windowed table's open windows, one a line: the key, then the window and its value."""
    stream = table.stream
    assert stream is not None
    parts = (
        range(stream.partitions) if key is None
        else [partition_of_field(field_of(key), stream.partitions)]
    )
    shown = 0
    for partition in parts:
        for found, window, value in await table.open_windows(partition, key, client=client):
            window_json = json.dumps({"start": window.start, "end": window.end})
            print(f"{json.dumps(found)} {window_json} {_shown(value)}")
            shown += 1
    if key is not None and not shown:
        print(f"table {table.name!r} has no open window of key {key!r}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    table = load_table(args.target)
    if table.stream is None:
        raise CliError(f"table {table.name!r} is not used by any actor, so it has no partitions")
    url = resolve_url(args, table.system)
    stream = table.stream

    async def main() -> int:
        await check_reachable(url)
        async with Client.from_url(url, client_name="actorstream:table") as client:
            if isinstance(table, WindowedTable):
                return await _windows(table, client, args.key)
            if args.key is not None:
                field = field_of(args.key)
                key = table.hash_key(partition_of_field(field, stream.partitions))
                data = await client.execute("HGET", key, field)
                if data is None:
                    print(f"table {table.name!r} has no key {args.key!r}", file=sys.stderr)
                    return EXIT_FAILURE
                print(_shown(table.codec.decode(data)))
                return EXIT_OK
            for partition in range(stream.partitions):
                cursor: Any = b"0"
                while True:
                    cursor, flat = await client.execute(
                        "HSCAN", table.hash_key(partition), cursor, "COUNT", 1000
                    )
                    for i in range(0, len(flat), 2):
                        key_text = key_of_field(flat[i].decode())
                        value = table.codec.decode(flat[i + 1])
                        print(f"{json.dumps(key_text)} {_shown(value)}")
                    if cursor in (b"0", 0, "0"):
                        break
        return EXIT_OK

    return run_async(main, url=url)
