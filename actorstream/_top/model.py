"""What ``top`` shows, as frozen values, and how one refresh's readings become a ``Snapshot``.

Pure: ``build_snapshot`` takes a typed ``Reading`` (what the poller read from Redis, already
parsed, see ``poll``) and the previous refresh's ``RefreshCounts``, and returns the snapshot plus
the counts for the next refresh. Rates are counter deltas over server time (``TIME``), so they do
not depend on the clock of the machine running ``top``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from attrs import frozen

from .._core.status import LayoutEntry, StatusDocument, WorkerEvent

__all__ = [
    "CoordinatorView",
    "EventView",
    "GroupRead",
    "LayoutEntry",
    "PartitionRead",
    "PartitionView",
    "Reading",
    "RefreshCounts",
    "SlotRead",
    "Snapshot",
    "StreamLayout",
    "StreamView",
    "WorkerView",
    "build_snapshot",
    "short_names",
    "stream_layouts",
]

#: A worker's status older than this (seconds: three missed publications at the default
#: ``telemetry_interval``) shows it as stale, with a "missed" event: before its leases expire
#: (6 s by default), so a worker killed with kill -9 is visible as soon as it can be known.
STALE_AFTER = 3.0

EventView = WorkerEvent


@frozen
class StreamLayout:
    """A stream, its partitions and the actors (consumer groups) that read it."""

    stream: str
    partitions: int
    actors: tuple[str, ...] = ()


def stream_layouts(entries: Sequence[LayoutEntry]) -> tuple[StreamLayout, ...]:
    out: dict[str, tuple[int, list[str]]] = {}
    for entry in entries:
        _parts, actors = out.setdefault(entry.stream, (entry.partitions, []))
        actors.append(entry.actor)
    return tuple(StreamLayout(s, p, tuple(a)) for s, (p, a) in out.items())


# -- readings: one refresh, parsed -----------------------------------------------------------


@frozen
class GroupRead:
    lag: int | None
    last_delivered: str


@frozen
class PartitionRead:
    length: int = 0
    added: int = 0
    last_generated: str = "0-0"
    groups: Mapping[str, GroupRead] = attrs.field(factory=dict)
    dead_letters: int = 0


@frozen
class SlotRead:
    owner: str | None = None
    epoch: int | None = None
    pending: int = 0
    oldest_pending_ms: int | None = None


@frozen
class Reading:
    """Everything one refresh read, by name (``poll`` makes it from the pipeline's replies)."""

    now: float
    streams: tuple[StreamLayout, ...] = ()
    members: tuple[str, ...] = ()
    events: tuple[WorkerEvent, ...] = ()
    leader: str | None = None
    docs: Mapping[str, StatusDocument] = attrs.field(factory=dict)
    partitions: Mapping[tuple[str, int], PartitionRead] = attrs.field(factory=dict)
    slots: Mapping[tuple[str, str, int], SlotRead] = attrs.field(factory=dict)


@frozen
class RefreshCounts:
    """The raw counters of the previous refresh, for rates."""

    time: float
    processed: Mapping[tuple[str, str, int], int]
    appended: Mapping[str, int]


# -- the snapshot ------------------------------------------------------------------------------


@frozen
class WorkerView:
    worker_id: str
    host: str
    pid: int
    uptime: float
    heartbeat_age: float | None
    partitions: int
    processed: int
    rate: float | None
    restarts: int
    dead_lettered: int
    last_error: str | None
    member: bool
    handler_p50: float | None = None
    handler_p99: float | None = None
    taken_at: float = 0.0  # when this view was read (wall clock)

    @property
    def started_silence(self) -> float:
        """When this worker became silent (wall clock): its last publication + STALE_AFTER
        (or now, when even its status has expired)."""
        if self.heartbeat_age is None:
            return self.taken_at
        return self.taken_at - self.heartbeat_age + STALE_AFTER

    @property
    def status(self) -> str:
        if not self.member:
            return "left"
        return "stale" if self.heartbeat_age is None or self.heartbeat_age > STALE_AFTER else "ok"


@frozen
class PartitionView:
    actor: str
    stream: str
    partition: int
    owner: str | None
    epoch: int | None
    state: str
    lag: int | None
    pending: int
    oldest_pending_age: float | None
    processed: int | None
    rate: float | None
    restarts: int
    dead_letters: int
    last_error: str | None
    in_flight: int | None = None  # events handed to the handler, not finished
    concurrency: int = 1  # what it may have in flight (1: one event at a time)
    late: int = 0  # events after their window closed (windowed tables)
    table_keys: int | None = None  # keys in its tables; None for a stateless actor
    outbox: int | None = None  # outputs waiting to be forwarded (exactly-once on a Cluster)

    @property
    def label(self) -> str:
        return f"{self.actor}[{self.partition}]"


@frozen
class StreamView:
    stream: str
    partitions: int
    length: int
    appended: int
    appended_rate: float | None
    processed_rate: float | None
    lag: int | None
    pending: int
    dead_letters: int


@frozen
class CoordinatorView:
    leader: str | None
    members: int
    rebalances: int
    last_rebalance_age: float | None
    unowned: int
    last_error: str | None


@frozen
class Snapshot:
    app: str
    url: str
    taken_at: float
    workers: tuple[WorkerView, ...]
    partitions: tuple[PartitionView, ...]
    streams: tuple[StreamView, ...]
    coordinator: CoordinatorView
    events: tuple[WorkerEvent, ...]
    layout_known: bool = True

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def worker_names(self) -> dict[str, str]:
        """The one display name of each worker id in this snapshot (see ``short_names``)."""
        ids = {w.worker_id for w in self.workers}
        ids |= {p.owner for p in self.partitions if p.owner}
        ids |= {e.worker for e in self.events if e.worker}
        if self.coordinator.leader:
            ids.add(self.coordinator.leader)
        return short_names(ids)


_WORKER_ID = re.compile(r"^(?P<base>.+-\d+)-[0-9a-f]{8}$")


def short_names(worker_ids: Iterable[str]) -> dict[str, str]:
    """Worker ids are ``host-pid-<8 hex>``; shown as ``host-pid`` unless two share it.

    Every panel uses the same mapping, so a worker has one name on the whole screen.
    """
    ids = sorted(set(worker_ids))
    bases = {i: m.group("base") if (m := _WORKER_ID.match(i)) else i for i in ids}
    taken = Counter(bases.values())
    return {i: bases[i] if taken[bases[i]] == 1 else i for i in ids}


# -- building it ---------------------------------------------------------------------------------


def _lag(group: GroupRead | None, part: PartitionRead) -> int | None:
    """XINFO GROUPS lag (Redis 7); else 0 if all delivered, the length if none, else None."""
    if group is None:
        return part.length
    if group.lag is not None:
        return group.lag
    if group.last_delivered == part.last_generated:
        return 0
    if group.last_delivered == "0-0":
        return part.length
    return None


def _rates(now: float, current: Mapping[Any, int], previous: Mapping[Any, int] | None,
           since: float | None) -> dict[Any, float]:
    """Per-key counter deltas per second; none on the first refresh or without time passing."""
    if previous is None or since is None or now <= since:
        return {}
    dt = now - since
    return {k: max(0, v - previous[k]) / dt for k, v in current.items() if k in previous}


def _partition_view(reading: Reading, actor: str, stream: str, p: int,
                    rates: Mapping[tuple[str, str, int], float]) -> PartitionView:
    part = reading.partitions.get((stream, p), PartitionRead())
    slot = reading.slots.get((actor, stream, p), SlotRead())
    owner = slot.owner
    doc = reading.docs.get(owner) if owner else None
    status = next((x for x in doc.partitions if (x.actor, x.partition) == (actor, p)), None) \
        if doc else None
    oldest = None
    if slot.pending and slot.oldest_pending_ms is not None:
        oldest = max(0.0, reading.now - slot.oldest_pending_ms / 1000)
    state = "unowned" if owner is None else (status.state if status else "no telemetry")
    return PartitionView(
        actor=actor, stream=stream, partition=p, owner=owner, epoch=slot.epoch, state=state,
        lag=_lag(part.groups.get(actor), part), pending=slot.pending, oldest_pending_age=oldest,
        processed=status.processed if status else None,
        rate=rates.get((owner, actor, p)) if owner else None,
        restarts=status.restarts if status else 0,
        dead_letters=part.dead_letters if stream and actor == _first_actor(reading, stream)
        else 0,
        last_error=status.last_error if status else None,
        in_flight=status.in_flight if status else None,
        concurrency=status.concurrency if status else 1,
        late=status.late_events if status else 0,
        table_keys=status.table_keys if status else None,
        outbox=status.outbox if status else None,
    )


def _first_actor(reading: Reading, stream: str) -> str | None:
    """Dead letters are per partition, shown once: on the stream's first actor."""
    layout = next((s for s in reading.streams if s.stream == stream), None)
    return layout.actors[0] if layout and layout.actors else None


def _stream_view(reading: Reading, layout: StreamLayout, parts: Sequence[PartitionView],
                 appended_rate: float | None, processed_rate: float | None) -> StreamView:
    reads = [reading.partitions.get((layout.stream, p), PartitionRead())
             for p in range(layout.partitions)]
    lags = [pv.lag for pv in parts]
    return StreamView(
        stream=layout.stream, partitions=layout.partitions,
        length=sum(r.length for r in reads), appended=sum(r.added for r in reads),
        appended_rate=appended_rate, processed_rate=processed_rate,
        lag=None if None in lags else sum(x or 0 for x in lags),
        pending=sum(pv.pending for pv in parts),
        dead_letters=sum(r.dead_letters for r in reads),
    )


def _worker_view(reading: Reading, worker: str, rate: float | None) -> WorkerView:
    doc = reading.docs.get(worker) or StatusDocument(worker_id=worker)
    p50 = [p.handler_p50 for p in doc.partitions if p.handler_p50 is not None]
    p99 = [p.handler_p99 for p in doc.partitions if p.handler_p99 is not None]
    published = doc.published_at
    return WorkerView(
        worker_id=worker, host=doc.host, pid=doc.pid, uptime=doc.uptime,
        heartbeat_age=max(0.0, reading.now - published) if published else None,
        partitions=doc.owned, processed=doc.processed, rate=rate, restarts=doc.restarts,
        dead_lettered=doc.dead_lettered, last_error=doc.coordinator.last_error,
        member=worker in reading.members,
        handler_p50=max(p50) if p50 else None, handler_p99=max(p99) if p99 else None,
        taken_at=reading.now,
    )


def _coordinator_view(reading: Reading, partitions: Sequence[PartitionView]) -> CoordinatorView:
    coords = [d.coordinator for d in reading.docs.values()]
    walls = [c.last_rebalance_wall for c in coords if c.last_rebalance_wall is not None]
    return CoordinatorView(
        leader=reading.leader,
        members=len(reading.members),
        rebalances=sum(c.rebalances for c in coords),
        last_rebalance_age=max(0.0, reading.now - max(walls)) if walls else None,
        unowned=sum(1 for pv in partitions if pv.owner is None),
        last_error=next((c.last_error for c in coords if c.last_error), None),
    )


def _with_missed(events: tuple[WorkerEvent, ...], workers: Sequence[WorkerView]
                 ) -> tuple[WorkerEvent, ...]:
    """The published events, plus one for each member that stopped publishing (a worker killed
    with kill -9 says nothing itself: its silence is the news), newest first."""
    missed = [
        WorkerEvent(t=w.started_silence, kind="missed", worker=w.worker_id,
                    msg=f"worker {w.worker_id} missed its heartbeats (silent for "
                    f"{_silence(w)}); its partitions move once their leases expire")
        for w in workers if w.member and w.status == "stale"
    ]
    if not missed:
        return events
    return tuple(sorted((*events, *missed), key=lambda e: e.t, reverse=True))


def _silence(worker: WorkerView) -> str:
    if worker.heartbeat_age is None:  # its status expired too: silent for a while
        return "longer than its status lives"
    return f"{worker.heartbeat_age:.0f}s"


def build_snapshot(reading: Reading, previous: RefreshCounts | None, *, app: str, url: str
                   ) -> tuple[Snapshot, RefreshCounts]:
    """The snapshot of one refresh, and the counters the next refresh computes rates from."""
    processed = {
        (w, p.actor, p.partition): p.processed
        for w, doc in reading.docs.items() for p in doc.partitions
    }
    since = previous.time if previous else None
    rates = _rates(reading.now, processed, previous.processed if previous else None, since)
    timed = since is not None and reading.now > since
    partitions: list[PartitionView] = []
    streams: list[StreamView] = []
    appended: dict[str, int] = {}
    for layout in reading.streams:
        parts = [_partition_view(reading, a, layout.stream, p, rates)
                 for p in range(layout.partitions) for a in layout.actors]
        appended[layout.stream] = sum(
            reading.partitions.get((layout.stream, p), PartitionRead()).added
            for p in range(layout.partitions)
        )
        appended_rate = _rates(reading.now, appended, previous.appended if previous else None,
                               since).get(layout.stream)
        processed_rate = (sum(r for (_w, a, _p), r in rates.items() if a in layout.actors)
                          if timed else None)
        partitions.extend(parts)
        streams.append(_stream_view(reading, layout, parts, appended_rate, processed_rate))
    workers = tuple(
        _worker_view(reading, w, sum(r for (ww, _a, _p), r in rates.items() if ww == w)
                     if timed else None)
        for w in sorted(set(reading.members) | set(reading.docs))
    )
    snapshot = Snapshot(
        app=app, url=url, taken_at=reading.now, workers=workers, partitions=tuple(partitions),
        streams=tuple(streams), coordinator=_coordinator_view(reading, partitions),
        events=_with_missed(reading.events, workers), layout_known=bool(reading.streams),
    )
    return snapshot, RefreshCounts(reading.now, processed, appended)
