"""A windowed table at run time, in memory: the partition's hot path (``wrap_handler``, with
its fast range for events of the tumbling window of the event before), its commits and a
reload from what they stored, against a model that scans everything.

Redis is not involved: what the commits would store is kept in a dict (the HSET and HDEL of
each planned commit applied to it), and a reload decodes it like ``_tree.tables.restore``.
"""

from __future__ import annotations

import collections
import contextlib
import types
from datetime import UTC, datetime
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actorstream import Record, System, Tumbling, Window
from actorstream._scope import PartitionTables
from actorstream._tree.windows import WindowsOfPartition, windowed_tables


class Sale(Record):
    customer: str
    ts: float


class Boom(Exception):
    pass


class Model:
    """Tumbling windows of counts by brute force: every window of every key, scanned."""

    def __init__(self, size: int, grace: int) -> None:
        self.size, self.grace = size, grace
        self.st: int | None = None
        self.counts: dict[tuple[str, int], int] = {}
        self.emitted: list[tuple[str, int, int, int]] = []
        self.late = 0

    def event(self, key: str, t: int, fails: bool) -> None:
        self.st = t if self.st is None else max(self.st, t)
        for (k, start), n in sorted(self.counts.items()):
            if start + self.size + self.grace <= self.st:
                del self.counts[k, start]
                self.emitted.append((k, start, start + self.size, n))
        start = t // self.size * self.size
        if start + self.size + self.grace <= self.st:
            self.late += not fails
        elif not fails:
            self.counts[key, start] = self.counts.get((key, start), 0) + 1


async def run_partition(size: int, grace: int, ops: list[Any], as_datetime: bool) -> None:
    system = System("rt", "redis://127.0.0.1:1/0", install_signal_handlers=False)
    time: Any = (lambda e: datetime.fromtimestamp(e.ts, UTC)) if as_datetime else "ts"
    sales = system.stream("sales", record=Sale, partitions=1, key="customer", time=time)
    counts = system.table("counts", value=int, default=0,
                          window=Tumbling(size / 1000, grace=grace / 1000))  # fmt: skip
    emitted: list[tuple[str, int, int, int]] = []  # committed
    emitting: list[tuple[str, int, int, int]] = []  # not yet: dropped by a crash
    failing: dict[int, Sale] = {}

    @system.actor(sales, tables=[counts])
    async def tally(sale: Sale) -> None:
        counts[sale.customer] += 1
        if id(sale) in failing:
            raise Boom

    @counts.on_close
    async def emit(customer: str, window: Window, n: int) -> None:
        emitting.append((customer, window.start_ms, window.end_ms, n))

    spec = system.actors["tally"]
    stored: dict[str, bytes] = {}
    late: collections.Counter[str] = collections.Counter()
    late_before: dict[str, int] = {}

    tables = PartitionTables("tally", 0, spec.tables, holds=False)
    counters = types.SimpleNamespace(late=late, processed=0)
    windows = WindowsOfPartition(tables, windowed_tables(spec.tables), sales, counters)
    handler = windows.wrap_handler(spec.handler)  # first deliveries
    chain = windows.wrap(tables.wrap(spec.handler))  # replayed ones

    def reload() -> None:  # like _tree.tables.restore: what is stored, nothing else
        tables.reset()
        tables.tables[counts].data = {f: counts.codec.decode(v) for f, v in stored.items()}

    def commit() -> None:
        for command in tables.pending.take().plan().commands:
            args = list(command[2:])
            if command[0] == "HSET":
                stored.update(zip(args[::2], args[1::2], strict=True))
            else:
                for field in args:
                    stored.pop(field, None)
        handled.clear()
        emitted.extend(emitting)
        emitting.clear()
        late_before.update(late)  # a statistic, not in the commit: as if it were

    async def handle(call: Any, sale: Sale) -> None:
        with contextlib.suppress(Boom):
            await call(sale)

    model = Model(size, grace)
    handled: list[Sale] = []  # since the last commit: redelivered after a crash
    for op, key, t in ops:
        if op == "commit":
            commit()
        elif op == "move":  # another actor takes over: it loads what is stored
            commit()
            reload()
        elif op == "crash":  # what was not committed is lost, its events come again
            reload()
            emitting.clear()
            late.clear()
            late.update(late_before)
            for sale in handled:
                await handle(chain, sale)
        else:
            sale = Sale(key, t / 1000)
            handled.append(sale)
            if op == "fail":
                failing[id(sale)] = sale
            await handle(handler, sale)
            model.event(key, t, op == "fail")
        assert sorted(emitted + emitting) == sorted(model.emitted)
    commit()
    # the end of time: every window closes, and none is left in the table
    await handler(Sale("end", 10**7 / 1000))
    model.event("end", 10**7, False)
    commit()
    assert sorted(emitted) == sorted(model.emitted)
    assert late["counts"] == model.late
    assert len(emitted) == len(set(emitted))


def times(start: int) -> st.SearchStrategy[list[Any]]:
    """Event times mostly moving forward (the fast range), with jumps, stragglers and lates."""
    op = st.one_of(
        st.tuples(st.sampled_from(["event"] * 8 + ["fail", "commit", "move", "crash"]),
                  st.sampled_from(["a", "b", "c"]), st.integers(-40, 25)),
    )  # fmt: skip
    return st.lists(op, min_size=5, max_size=120).map(lambda steps: _absolute(start, steps))


def _absolute(start: int, steps: list[tuple[str, str, int]]) -> list[Any]:
    out, t = [], start
    for op, key, delta in steps:
        t = max(start, t + delta if delta > -30 else t - 3 * delta)  # < -30: a jump ahead
        out.append((op, key, t if delta > -35 else max(start, t - 500)))  # a straggler
    return out


@settings(max_examples=300, deadline=None)
@given(size=st.integers(5, 60), grace=st.integers(0, 30), ops=times(1_000_000),
       as_datetime=st.booleans())  # fmt: skip
def test_tumbling_hot_path_matches_the_model(
    size: int, grace: int, ops: list[Any], as_datetime: bool
) -> None:
    trio.run(run_partition, size, grace, ops, as_datetime)
