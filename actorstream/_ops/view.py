"""What the metrics and health endpoints read: a frozen view of one running worker.

``worker_view`` is the one place that knows where the runtime keeps its counters, so the
collector and the HTTP server never reach into the supervision tree themselves. Everything is
read at scrape time from counters the runtime keeps anyway: the per-event path pays nothing.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from attrs import frozen

from .durations import Durations
from .sent import sent_for

if TYPE_CHECKING:
    from .._tree.root import Worker

@frozen
class PartitionView:
    actor: str
    stream: str
    partition: int
    handled: int
    restarts: int
    errors: Mapping[str, int] = attrs.field(factory=dict)
    dead_letters: Mapping[str, int] = attrs.field(factory=dict)
    durations: Durations | None = None
    late: Mapping[str, int] = attrs.field(factory=dict)  # late events by windowed table
    table_keys: Mapping[str, int] = attrs.field(factory=dict)  # keys held per table


@frozen
class Backlog:
    """XINFO GROUPS of one partition for this worker's consumer group(s)."""

    lag: int | None  # entries not yet delivered to the group; None when Redis cannot tell
    pending: int  # delivered, not acknowledged


@frozen
class WorkerView:
    app: str
    partitions: tuple[PartitionView, ...]
    owned: int
    rebalances: int
    leases_lost: int
    redis_errors: Mapping[str, int]
    sent: Mapping[str, int]
    backlog: Mapping[tuple[str, int], Backlog] = attrs.field(factory=dict)


def worker_view(worker: Worker, backlog: Mapping[tuple[str, int], Backlog]) -> WorkerView:
    actors = worker.plan.actors
    parts = []
    redis_errors: collections.Counter[str] = collections.Counter(worker.ownership.redis_errors)
    for slot, c in sorted(worker.partitions.counters.items()):
        parts.append(
            PartitionView(
                actor=slot.actor,
                stream=actors[slot.actor].stream.name,
                partition=slot.partition,
                handled=c.processed,
                restarts=c.restarts,
                errors=dict(c.errors),
                dead_letters=dict(c.dead_letters),
                durations=c.durations,
                late=dict(c.late),
                table_keys=c.tables() if c.tables is not None else {},
            )
        )
        redis_errors.update(c.redis_errors)
    own = worker.ownership
    return WorkerView(
        app=worker.app,
        partitions=tuple(parts),
        owned=len(own.leases),
        rebalances=own.rebalances,
        leases_lost=own.leases_lost,
        redis_errors=dict(redis_errors),
        sent=sent_for(worker.app),
        backlog=backlog,
    )


def idle_view(app: str) -> WorkerView:
    """Before the worker runs (or after): producers' counts only."""
    return WorkerView(
        app=app, partitions=(), owned=0, rebalances=0, leases_lost=0,
        redis_errors={}, sent=sent_for(app),
    )


async def read_backlog(worker: Worker) -> dict[tuple[str, int], Backlog]:
    """Lag and pending of the partitions this worker owns: one pipeline of XINFO GROUPS.

    With several actors on one stream the gauges (labelled by stream and partition, not
    actor) show the largest lag and pending among this worker's groups there.
    """
    from .._core import keys as _keys

    owned = sorted(worker.ownership.leases)
    if not owned:
        return {}
    actors = worker.plan.actors
    wanted: dict[tuple[str, int], set[str]] = {}
    for slot in owned:
        stream = actors[slot.actor].stream.name
        wanted.setdefault((stream, slot.partition), set()).add(slot.actor)
    keys = sorted(wanted)
    replies = await worker.client.pipeline(
        [("XINFO", "GROUPS", _keys.stream_key(worker.app, s, p)) for s, p in keys]
    )
    out: dict[tuple[str, int], Backlog] = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, Exception):
            continue  # no stream yet (nothing sent): nothing to report
        best: Backlog | None = None
        for group in reply:
            info = _pairs(group)
            if info.get("name") not in wanted[key]:
                continue
            lag = info.get("lag")
            found = Backlog(
                lag=None if lag is None else int(lag), pending=int(info.get("pending") or 0)
            )
            if best is None:
                best = found
            else:
                lags = [x for x in (best.lag, found.lag) if x is not None]
                best = Backlog(
                    lag=max(lags) if lags else None, pending=max(best.pending, found.pending)
                )
        if best is not None:
            out[key] = best
    return out


def _pairs(flat: Any) -> dict[str, Any]:
    it = iter(flat)
    out: dict[str, Any] = {}
    for name in it:
        value = next(it)
        out[name.decode() if isinstance(name, bytes) else str(name)] = (
            value.decode() if isinstance(value, bytes) else value
        )
    return out
