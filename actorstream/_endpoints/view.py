"""What the metrics and health endpoints read: a frozen sample of one running worker.

``worker_sample`` is the one place that knows where the runtime keeps its counters, so the
collector and the HTTP server never reach into the supervision tree themselves. Everything is
read at scrape time from counters the runtime keeps anyway: the per-event path pays nothing.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

import attrs
from attrs import frozen

from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.deadletter import DEAD_LETTER_KINDS
from .._core.replies import pairs, text
from .._ops.durations import Durations
from .._ops.sent import sent_for
from .._tree.root import Worker


@frozen
class PartitionSample:
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
class WorkerSample:
    app: str
    partitions: tuple[PartitionSample, ...]
    owned: int
    rebalances: int
    leases_lost: int
    redis_errors: Mapping[str, int]
    sent: Mapping[str, int]
    backlog: Mapping[tuple[str, int], Backlog] = attrs.field(factory=dict)


def worker_sample(worker: Worker, backlog: Mapping[tuple[str, int], Backlog]) -> WorkerSample:
    actors = worker.plan.actors
    parts = []
    redis_errors: collections.Counter[str] = collections.Counter(worker.ownership.redis_errors)
    for slot, c in sorted(worker.partitions.counters.items()):
        parts.append(
            PartitionSample(
                actor=slot.actor,
                stream=actors[slot.actor].stream.name,
                partition=slot.partition,
                handled=c.processed,
                restarts=c.restarts,
                errors=dict(c.errors),
                dead_letters=_known_at_zero(DEAD_LETTER_KINDS, c.dead_letters),
                durations=c.durations,
                late=dict(c.late),
                table_keys=c.tables() if c.tables is not None else {},
            )
        )
        redis_errors.update(c.redis_errors)
    own = worker.ownership
    return WorkerSample(
        app=worker.app,
        partitions=tuple(parts),
        owned=len(own.leases),
        rebalances=own.rebalances,
        leases_lost=own.leases_lost,
        redis_errors=_known_at_zero(REDIS_ERROR_NAMES, redis_errors),
        sent=_known_at_zero([s.name for s in worker.plan.streams], sent_for(worker.app)),
        backlog=backlog,
    )


def idle_sample(app: str, streams: Sequence[str] = ()) -> WorkerSample:
    """Before the worker runs (or after): producers' counts only."""
    return WorkerSample(
        app=app, partitions=(), owned=0, rebalances=0, leases_lost=0,
        redis_errors=_known_at_zero(REDIS_ERROR_NAMES, {}),
        sent=_known_at_zero(streams, sent_for(app)),
    )


#: The Redis errors the runtime counts and recovers from, by class name.
REDIS_ERROR_NAMES = tuple(cls.__name__ for cls in TRANSIENT_REDIS_ERRORS)


def _known_at_zero(known: Iterable[str], counted: Mapping[str, int]) -> dict[str, int]:
    """Every known label at 0 unless counted: a labelled counter has its series from the first
    scrape, so ``rate()`` and alerts work before the first event of a kind."""
    return {**dict.fromkeys(known, 0), **counted}


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
            info = pairs(group)
            if text(info.get("name", b"")) not in wanted[key]:
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
