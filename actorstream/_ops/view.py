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

if TYPE_CHECKING:
    from .._system import Runtime, System

#: Events sent by producers of this process, per (app, stream). Incremented once per
#: ``send``/``send_many`` call (not per event), read at scrape time.
EVENTS_SENT: collections.Counter[tuple[str, str]] = collections.Counter()


def count_sent(app: str, stream: str, n: int) -> None:
    EVENTS_SENT[(app, stream)] += n


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


def sent_for(app: str) -> dict[str, int]:
    return {stream: n for (a, stream), n in EVENTS_SENT.items() if a == app}


def worker_view(runtime: Runtime, backlog: Mapping[tuple[str, int], Backlog]) -> WorkerView:
    parts = []
    for slot, c in sorted(runtime.manager.counters.items()):
        spec = runtime.system.actors[slot.actor]
        parts.append(
            PartitionView(
                actor=slot.actor,
                stream=spec.stream.name,
                partition=slot.partition,
                handled=c.processed,
                restarts=c.restarts,
                errors=dict(getattr(c, "errors", {})),
                dead_letters=dict(getattr(c, "dead_letters", {})),
                durations=getattr(c, "durations", None),
            )
        )
    own = runtime.ownership
    return WorkerView(
        app=runtime.app,
        partitions=tuple(parts),
        owned=len(own.leases),
        rebalances=own.rebalances,
        leases_lost=int(getattr(own, "leases_lost", 0)),
        redis_errors=dict(getattr(runtime, "redis_errors", {})),
        sent=sent_for(runtime.app),
        backlog=backlog,
    )


def idle_view(system: System) -> WorkerView:
    """Before the worker runs (or after): producers' counts only."""
    return WorkerView(
        app=system.name, partitions=(), owned=0, rebalances=0, leases_lost=0,
        redis_errors={}, sent=sent_for(system.name),
    )


async def read_backlog(runtime: Runtime) -> dict[tuple[str, int], Backlog]:
    """Lag and pending of the partitions this worker owns: one pipeline of XINFO GROUPS.

    With several actors on one stream the gauges (labelled by stream and partition, not
    actor) show the largest lag and pending among this worker's groups there.
    """
    from .. import _keys

    owned = sorted(runtime.ownership.leases)
    if not owned:
        return {}
    wanted: dict[tuple[str, int], set[str]] = {}
    for slot in owned:
        wanted.setdefault((runtime.stream_of(slot.actor), slot.partition), set()).add(slot.actor)
    keys = sorted(wanted)
    replies = await runtime.client.pipeline(
        [("XINFO", "GROUPS", _keys.stream_key(runtime.app, s, p)) for s, p in keys]
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
