"""The status document: what a worker publishes for ``actorstream top`` and what top reads.

A worker's telemetry writes one JSON object per interval
(``as:{app:telemetry}:status:<worker>``) and pushes notable events onto
``as:{app:telemetry}:events``. This module is the schema of both, as frozen values:
``to_json`` gives the published shape, ``from_json`` reads it back tolerantly (a reader may meet
an older or newer worker: unknown fields are ignored, a malformed item is skipped, a document
that is not an object at all is ``StatusFormatError``). Pure: no trio, no sockets.

Times here are wall-clock seconds: other processes cannot read a worker's monotonic clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from attrs import frozen

__all__ = [
    "ACTIVE_STATES",
    "CoordinatorStatus",
    "LayoutEntry",
    "PartitionStatus",
    "StatusDocument",
    "StatusFormatError",
    "WorkerEvent",
]

#: Partition states in which a worker is working on (or about to work on) a partition.
ACTIVE_STATES = (
    "starting", "restoring", "replaying", "running", "draining", "waiting-redis", "backing-off"
)


class StatusFormatError(ValueError):
    """A status document or event that cannot be read at all."""


def _int(value: Any, default: int = 0) -> int:
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _float(value: Any, default: float = 0.0) -> float:
    if value is None or isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _opt_float(value: Any) -> float | None:
    return None if value is None else _float(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _table_keys(value: Any) -> int | None:
    """Keys over every table of a partition (a worker may publish them per table)."""
    if isinstance(value, Mapping):
        return sum(_int(v) for v in value.values())
    return _opt_int(value)


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StatusFormatError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@frozen
class PartitionStatus:
    """One (actor, partition) this worker runs, as its partition actor last saw it."""

    actor: str
    partition: int
    stream: str = ""
    state: str = "unknown"
    epoch: int | None = None
    processed: int = 0
    restarts: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    handler_p50: float | None = None
    handler_p99: float | None = None
    backoff: float = 0.0
    in_flight: int = 0
    concurrency: int = 1
    late_events: int = 0  # events after their window closed (windowed tables)
    table_keys: int | None = None  # keys held in its tables (None: a stateless actor)
    outbox: int | None = None  # entries waiting in its outbox (exactly-once on a Cluster)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @classmethod
    def from_json(cls, data: Any) -> PartitionStatus:
        item = _object(data, "a partition")
        if "actor" not in item or "partition" not in item:
            raise StatusFormatError("a partition needs 'actor' and 'partition'")
        return cls(
            actor=str(item["actor"]),
            partition=_int(item["partition"], -1),
            stream=str(item.get("stream") or ""),
            state=str(item.get("state") or "unknown"),
            epoch=_opt_int(item.get("epoch")),
            processed=_int(item.get("processed")),
            restarts=_int(item.get("restarts")),
            dead_lettered=_int(item.get("dead_lettered")),
            last_error=_opt_str(item.get("last_error")),
            handler_p50=_opt_float(item.get("handler_p50")),
            handler_p99=_opt_float(item.get("handler_p99")),
            backoff=_float(item.get("backoff")),
            in_flight=_int(item.get("in_flight")),
            concurrency=_int(item.get("concurrency"), 1),
            late_events=_int(item.get("late_events")),
            table_keys=_table_keys(item.get("table_keys")),
            outbox=_opt_int(item.get("outbox")),
        )


@frozen
class CoordinatorStatus:
    """``owned`` counts the leases held: it does not dip while a partition actor restarts."""

    owned: int | None = None
    rebalances: int = 0
    last_rebalance_wall: float | None = None
    last_error: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> CoordinatorStatus:
        item = data if isinstance(data, Mapping) else {}
        return cls(
            owned=_opt_int(item.get("owned")),
            rebalances=_int(item.get("rebalances")),
            last_rebalance_wall=_opt_float(item.get("last_rebalance_wall")),
            last_error=_opt_str(item.get("last_error")),
        )


@frozen
class LayoutEntry:
    """An actor of the app, the stream it reads and the stream's partition count: from the app,
    or from its workers' telemetry, so ``top APP`` works without the code."""

    actor: str
    stream: str
    partitions: int

    @classmethod
    def from_json(cls, data: Any) -> LayoutEntry:
        item = _object(data, "a layout item")
        try:
            partitions = int(item["partitions"])
            return cls(str(item["actor"]), str(item["stream"]), partitions)
        except (KeyError, TypeError, ValueError):
            raise StatusFormatError(f"bad layout item {dict(item)!r}") from None


def _sequence(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _parse_all(cls: Any, items: Any) -> tuple[Any, ...]:
    """Every item that parses; a malformed one is skipped, not fatal."""
    out = []
    for item in _sequence(items):
        try:
            out.append(cls.from_json(item))
        except StatusFormatError:
            continue
    return tuple(out)


@frozen
class StatusDocument:
    """One worker's published status. ``worker_id`` is the one name of a worker everywhere."""

    worker_id: str
    host: str = ""
    pid: int = 0
    app: str = ""
    version: str = ""
    uptime: float = 0.0
    published_at: float | None = None
    partitions: tuple[PartitionStatus, ...] = ()
    coordinator: CoordinatorStatus = attrs.field(factory=CoordinatorStatus)
    restarts: int = 0
    dead_lettered: int = 0
    layout: tuple[LayoutEntry, ...] = ()

    @property
    def owned(self) -> int:
        """Partitions this worker holds; from its leases when it says, else its active actors."""
        if self.coordinator.owned is not None:
            return self.coordinator.owned
        return sum(1 for p in self.partitions if p.active)

    @property
    def processed(self) -> int:
        return sum(p.processed for p in self.partitions)

    @classmethod
    def from_json(cls, data: Any, worker_id: str | None = None) -> StatusDocument:
        """Read a published document; ``worker_id`` (from the key) wins over the body's."""
        doc = _object(data, "a status document")
        wid = worker_id or doc.get("worker_id")
        if not wid:
            raise StatusFormatError("a status document needs a worker_id")
        supervisor = doc.get("supervisor")
        return cls(
            worker_id=str(wid),
            host=str(doc.get("host") or ""),
            pid=_int(doc.get("pid")),
            app=str(doc.get("app") or ""),
            version=str(doc.get("version") or ""),
            uptime=_float(doc.get("uptime")),
            published_at=_opt_float(doc.get("published_at")),
            partitions=_parse_all(PartitionStatus, doc.get("partitions")),
            coordinator=CoordinatorStatus.from_json(doc.get("coordinator")),
            restarts=_int(supervisor.get("restarts") if isinstance(supervisor, Mapping) else 0),
            dead_lettered=_int(doc.get("dead_lettered")),
            layout=_parse_all(LayoutEntry, doc.get("layout")),
        )

    def to_json(self) -> dict[str, Any]:
        """The published shape (what ``from_json`` reads back)."""
        doc = attrs.asdict(self, recurse=True)
        doc["supervisor"] = {"restarts": doc.pop("restarts")}
        return doc


@frozen
class WorkerEvent:
    """A notable event (crash, restart, rebalance, fence, dead letter, released, left)."""

    t: float
    kind: str
    msg: str
    worker: str = ""

    @classmethod
    def from_json(cls, data: Any) -> WorkerEvent:
        item = _object(data, "an event")
        try:
            return cls(float(item["t"]), str(item["kind"]), str(item["msg"]),
                       str(item.get("worker") or ""))
        except (KeyError, TypeError, ValueError):
            raise StatusFormatError(f"bad event {dict(item)!r}") from None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)
