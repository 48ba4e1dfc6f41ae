"""Scalar tables changed one call at a time keep each write as one journal entry: undone in
reverse when the call does not return, read once per field when the commit is planned."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actorstream import System
from actorstream._core.hashing import partition_for
from actorstream._tables import PartitionTables


def declared(codec: str = "json") -> tuple[Any, Any, Any]:
    system = System("journal", "redis://127.0.0.1:1/0")
    orders = system.stream("orders", partitions=4, key="customer")
    counts = system.table("counts", value=int, default=0, codec=codec)
    names = system.table("names", value=str, default="")

    @system.actor(orders, tables=[counts, names])
    async def tally(event: Any) -> None: ...

    return counts, names, PartitionTables("tally", 1, (counts, names), holds=False)


def keys_in(partition: int, n: int) -> list[str]:
    return [k for k in (f"k{i}" for i in range(1000)) if partition_for(k, 4) == partition][:n]


def test_a_call_that_raises_is_undone_in_reverse_whatever_it_wrote() -> None:
    counts, names, tables = declared()
    a, b, c = keys_in(1, 3)
    assert tables.logged

    async def first(_: Any) -> None:
        counts[a] = 5
        names[b] = "bee"

    async def messy(_: Any) -> None:
        counts[a] += 1
        counts[a] = 70
        del counts[a]
        counts[a] = 9
        counts[c] = 1  # a new key
        del names[b]
        names[b] = "other"
        raise RuntimeError("nothing of this call may stay")

    async def main() -> None:
        await tables.wrap(first)(None)
        with pytest.raises(RuntimeError):
            await tables.wrap(messy)(None)

    trio.run(main)
    assert tables.tables[counts].data == {a: 5}
    assert tables.tables[names].data == {b: "bee"}
    assert tables.spare is not None and tables.spare.journal == []
    plan = tables.pending.plan()
    assert sorted(plan.commands) == sorted([
        ("HSET", counts.hash_key(1), a, 5),  # an int goes as it is: JSON's text is its decimal
        ("HSET", names.hash_key(1), b, b'"bee"'),
    ])


def test_the_commit_writes_the_last_value_of_every_field_kept_and_deletes_the_deleted() -> None:
    counts, _names, tables = declared()
    a, b = keys_in(1, 2)

    async def handler(n: int) -> None:
        counts[a] += n
        if n == 2:
            counts[b] = 1
        if n == 3:
            del counts[b]

    async def main() -> None:
        for n in (1, 2, 3, 4):
            await tables.wrap(handler)(n)

    trio.run(main)
    plan = tables.pending.plan()
    assert plan.commands == [("HSET", counts.hash_key(1), a, 10), ("HDEL", counts.hash_key(1), b)]


def test_an_int_table_in_another_codec_is_encoded_by_it() -> None:
    pytest.importorskip("msgpack")
    counts, _names, tables = declared(codec="msgpack")
    (a,) = keys_in(1, 1)

    async def handler(_: Any) -> None:
        counts[a] = 300

    trio.run(lambda: tables.wrap(handler)(None))
    (command,) = tables.pending.plan().commands
    assert command[:3] == ("HSET", counts.hash_key(1), a) and command[3] == counts.codec.encode(300)
    assert command[3] != b"300"
