"""The table mapping inside a handler's event scope, without Redis: writes buffered per event,
kept only when the handler returned, refused with a precise message where they cannot go."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio

from actorstream import ConfigError, Record, System, TableError
from actorstream._core.hashing import partition_for
from actorstream._tables import PartitionTables


class Total(Record):
    orders: int
    amount: float


def declared(partitions: int = 4, **kwargs: Any) -> tuple[System, Any, Any]:
    system = System("scope", "redis://127.0.0.1:1/0")
    orders = system.stream("orders", partitions=partitions, key="customer")
    counts = system.table("counts", value=int, default=0)
    totals = system.table("totals", value=Total, default=lambda: Total(0, 0.0))

    @system.actor(orders, tables=[counts, totals], **kwargs)
    async def tally(event: Any) -> None: ...

    return system, counts, totals


def key_in(partition: int, partitions: int = 4, prefix: str = "k") -> str:
    return next(f"{prefix}{i}" for i in range(1000) if partition_for(f"{prefix}{i}", partitions)
                == partition)


def run(fn: Any) -> Any:
    return trio.run(fn)


def test_writes_are_kept_only_when_the_handler_returns() -> None:
    _, counts, totals = declared()
    tables = PartitionTables("tally", 1, (counts, totals), holds=False)
    a, b = key_in(1), key_in(1, prefix="x")

    async def good(_: Any) -> None:
        counts[a] += 1
        counts[a] += 1
        totals[b] = Total(1, 2.5)
        assert counts[a] == 2 and a in counts and counts.get("nope-" + a) is None

    async def bad(_: Any) -> None:
        counts[a] = 100
        del totals[b]
        raise RuntimeError("boom")

    async def main() -> None:
        await tables.wrap(good)(None)
        with pytest.raises(RuntimeError):
            await tables.wrap(bad)(None)

    run(main)
    local = tables.tables[counts]
    assert local.data == {a: 2}
    assert tables.tables[totals].data == {b: Total(1, 2.5)}
    plan = tables.pending.plan()
    assert ("HSET", local.hash_key, a, 2) in plan.commands  # an int as it is (JSON: decimal)
    assert tables.keys() == {"counts": 1, "totals": 1}


def test_del_in_get_setdefault_items_and_defaults() -> None:
    _, counts, totals = declared(partitions=1)
    tables = PartitionTables("tally", 0, (counts, totals), holds=False)
    tables.tables[counts].data = {"a": 5, "b": 1}

    async def handler(_: Any) -> None:
        del counts["a"]
        assert "a" not in counts and counts["a"] == 0  # the default again, not written
        with pytest.raises(KeyError):
            del counts["a"]
        assert counts.setdefault("c", 9) == 9
        assert dict(counts.items()) == {"b": 1, "c": 9}
        assert len(counts) == 2
        assert totals["new"] == Total(0, 0.0)
        assert "new" not in totals

    run(lambda: tables.wrap(handler)(None))
    assert tables.tables[counts].data == {"b": 1, "c": 9}
    assert tables.pending.plan().commands[-1] == ("HDEL", tables.tables[counts].hash_key, "a")


def test_a_key_of_another_partition_or_another_actor_is_refused_with_the_fix() -> None:
    system, counts, totals = declared()
    other = system.table("other", value=str)
    tables = PartitionTables("tally", 1, (counts, totals), holds=False)
    foreign = key_in(2)

    async def wrong_key(_: Any) -> None:
        counts[foreign] += 1

    async def undeclared(_: Any) -> None:
        other["x"] = "y"

    with pytest.raises(TableError, match=rf"key '{foreign}' belongs to partition 2, this "
                                         r"handler runs for partition 1"):
        run(lambda: tables.wrap(wrong_key)(None))
    with pytest.raises(TableError, match="not declared by actor 'tally'"):
        run(lambda: tables.wrap(undeclared)(None))
    assert not tables.pending


def test_a_value_the_table_cannot_hold_fails_the_event_and_keeps_nothing() -> None:
    _, counts, totals = declared(partitions=1)
    tables = PartitionTables("tally", 0, (counts, totals), holds=False)

    async def wrong_type(_: Any) -> None:
        counts["a"] = "seven"

    async def unencodable(_: Any) -> None:
        counts["a"] = 1
        totals["a"] = Total(1, float("nan"))  # JSON has no NaN: refused when encoded

    with pytest.raises(TypeError, match="holds int values, got str"):
        run(lambda: tables.wrap(wrong_type)(None))
    with pytest.raises(TypeError, match="cannot store the value of 'a'"):
        run(lambda: tables.wrap(unencodable)(None))
    assert not tables.pending and tables.tables[counts].data == {}


def test_outputs_are_held_in_an_exactly_once_scope() -> None:
    system, counts, _ = declared(partitions=1, processing="exactly_once")
    out = system.stream("out")
    tables = PartitionTables("tally", 0, (counts,), holds=True)

    async def handler(_: Any) -> None:
        assert await out.send({"n": 1}) == ""
        assert await out.send_many([{"n": 2}, {"n": 3}]) == ["", ""]

    run(lambda: tables.wrap(handler)(None))
    plan = tables.pending.plan()
    assert plan.outputs == 3
    assert [c[0] for c in plan.commands] == ["XADD"] * 3


def test_ordering_none_with_tables_is_refused() -> None:
    system = System("scope2", "redis://127.0.0.1:1/0")
    orders = system.stream("orders", partitions=2, key="customer")
    counts = system.table("counts", value=int, default=0)
    if not _has_ordering_setting():
        pytest.skip("ordering is not an actor setting yet")
    with pytest.raises(ConfigError, match="tables need ordering='partition' or 'key'"):
        system.actor(orders, tables=[counts], ordering="none", name="tally")(_handler)


def _has_ordering_setting() -> bool:
    from actorstream import ActorSettings

    return "ordering" in {a.name for a in ActorSettings.__attrs_attrs__}


async def _handler(event: Any) -> None: ...


def test_calls_in_flight_at_once_never_see_or_overwrite_each_others_changes() -> None:
    """With many events in flight (ordering='key'), a call reads another call's key as it was
    before that call (as if it ran first) and may not change it; an aborted call leaves no
    trace, a completed one releases its keys."""
    _, counts, totals = declared(partitions=1)
    tables = PartitionTables("tally", 0, (counts, totals), holds=False, concurrent=True)
    tables.tables[counts].data = {"a": 1, "b": 10}
    a_changed = trio.Event()
    b_may_finish = trio.Event()
    seen: list[Any] = []

    async def writes_a(_: Any) -> None:
        counts["a"] += 1
        a_changed.set()
        await b_may_finish.wait()
        raise RuntimeError("a fails: its change is undone")

    async def reads_a_writes_b(_: Any) -> None:
        await a_changed.wait()
        seen.append(counts["a"])  # a's change in flight: b sees a as it was
        seen.append("a" in counts)
        counts["b"] = counts["a"] + counts["b"]
        with pytest.raises(TableError, match="'a' is being changed by another event in flight"):
            counts["a"] = 0
        b_may_finish.set()

    async def main() -> None:
        async def guarded(fn: Any) -> None:
            with contextlib.suppress(RuntimeError):
                await tables.wrap(fn)(None)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, writes_a)
            nursery.start_soon(guarded, reads_a_writes_b)

    run(main)
    assert seen == [1, True]
    assert tables.tables[counts].data == {"a": 1, "b": 11}
    assert not tables.tables[counts].owners
    local = tables.tables[counts]
    assert tables.pending.plan().commands == [("HSET", local.hash_key, "b", 11)]


def test_a_handler_inside_middleware_is_one_unit_with_it() -> None:
    """The handler and its middleware chain are both wrapped: a handler that raised leaves
    nothing even if a middleware swallows the error; a middleware raising after the handler
    returned undoes the handler's changes."""
    _, counts, totals = declared(partitions=1)
    tables = PartitionTables("tally", 0, (counts, totals), holds=False)

    async def handler(_: Any) -> None:
        counts["h"] += 1
        raise ValueError("handler fails")

    async def good_handler(_: Any) -> None:
        counts["g"] += 1

    wrapped_handler = tables.wrap(handler)
    wrapped_good = tables.wrap(good_handler)

    async def swallowing(event: Any) -> None:
        counts["mw"] += 1
        with contextlib.suppress(ValueError):
            await wrapped_handler(event)

    async def raising_after(event: Any) -> None:
        await wrapped_good(event)
        raise RuntimeError("middleware fails after the handler returned")

    run(lambda: tables.wrap(swallowing)(None))
    assert tables.tables[counts].data == {"mw": 1}  # the handler's own change undone
    with pytest.raises(RuntimeError):
        run(lambda: tables.wrap(raising_after)(None))
    assert tables.tables[counts].data == {"mw": 1}
    assert tables.pending.plan().commands == [
        ("HSET", tables.tables[counts].hash_key, "mw", 1)
    ]
