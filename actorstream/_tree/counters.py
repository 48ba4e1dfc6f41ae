"""What `statistics()` and `top` show of one (actor, partition): its state and counters.

``Counters`` are mutable and outlive the actor's restarts (the partitions supervisor keeps one per
slot); ``snapshot`` turns them into the frozen ``PartitionStatistics``.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable

from attrs import frozen

from .._actors import ActorSpec
from .._core.crashes import CrashLogLimit
from .._core.failures import PartitionFailures
from .._ops.durations import Durations

__all__ = ["Counters", "PartitionState", "PartitionStatistics", "snapshot"]

#: Handler durations are sampled every SAMPLE_EVERY-th event (p50/p99 for `top`, cheaply).
SAMPLE_EVERY = 16


class PartitionState(enum.Enum):
    STARTING = "starting"
    RESTORING = "restoring"  # loading the partition's tables after taking its lease
    REPLAYING = "replaying"
    RUNNING = "running"
    DRAINING = "draining"
    WAITING_REDIS = "waiting-redis"
    BACKING_OFF = "backing-off"  # handler failures: an outage presumed, or past its intensity
    GROUP_LOST = "group-lost"
    STOPPED = "stopped"
    FENCED = "fenced"
    FAILED = "failed"


@frozen
class PartitionStatistics:
    actor: str
    stream: str
    partition: int
    state: str
    epoch: int
    processed: int
    acked: int
    failed: int
    dead_lettered: int
    trimmed: int
    restarts: int
    last_error: str | None
    last_dead_letter: str | None
    handler_p50: float | None = None
    handler_p99: float | None = None
    streak: int = 0  # distinct events failed since the last success
    backoff: float | None = None  # the wait of a backing-off partition, seconds
    in_flight: int = 0  # events handed to the handler and not finished
    concurrency: int = 1  # units (events, or batches) it may have in flight
    table_keys: dict[str, int] | None = None  # keys per table held by this partition (if any)
    committed: int = 0  # commits with table writes or held outputs
    restore_seconds: float | None = None  # how long the last load of its tables took
    late_events: int = 0  # events that came after their window closed (windowed tables)
    ticks: int = 0  # punctuator calls that returned (each commits with the partition's next)
    outbox: int | None = None  # entries waiting in its outbox (exactly-once on a Cluster)
    forwarded: int = 0  # outbox entries appended to their target streams


class Counters:
    """Mutable counters of one (actor, partition), kept across restarts of its actor."""

    __slots__ = (
        "acked",
        "backoff",
        "committed",
        "crash_log",
        "dead_lettered",
        "dead_letters",
        "durations",
        "epoch",
        "errors",
        "failed",
        "failures",
        "forwarded",
        "in_flight",
        "last_dead_letter",
        "last_error",
        "last_trace",
        "late",
        "latencies",
        "outbox",
        "processed",
        "redis_errors",
        "restarts",
        "restore_seconds",
        "state",
        "tables",
        "ticks",
        "trimmed",
    )

    def __init__(self, failures: PartitionFailures, *, timed: bool = False,
                 crash_log: CrashLogLimit | None = None) -> None:
        self.state = PartitionState.STARTING
        self.epoch = 0
        self.processed = 0
        self.acked = 0
        self.failed = 0
        self.dead_lettered = 0
        self.trimmed = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.last_dead_letter: str | None = None
        self.last_trace: str | None = None  # bounded traceback of the last handler failure
        self.failures = failures  # the containment rule's state for this partition
        self.crash_log = crash_log if crash_log is not None else CrashLogLimit()
        self.backoff: float | None = None  # set while backing off
        self.in_flight = 0  # events handed to the handler and not finished (set by the loops)
        # Handler durations of every SAMPLE_EVERY-th event: p50/p99 for `top`, cheaply.
        self.latencies: collections.deque[float] = collections.deque(maxlen=256)
        # Rare-path counts by label, read at scrape time by the metrics collector.
        self.errors: collections.Counter[str] = collections.Counter()  # handler errors by type
        self.dead_letters: collections.Counter[str] = collections.Counter()  # by kind
        self.redis_errors: collections.Counter[str] = collections.Counter()
        # Every handler duration, only when metrics are served (a histogram is not a sample).
        self.durations: Durations | None = Durations() if timed else None
        self.committed = 0  # round trips that carried table writes or held outputs
        self.restore_seconds: float | None = None
        self.tables: Callable[[], dict[str, int]] | None = None  # keys per table, if stateful
        self.late: collections.Counter[str] = collections.Counter()  # late events by table
        self.ticks = 0  # punctuator calls that returned
        self.outbox: int | None = None  # outbox length last seen (exactly-once on a Cluster)
        self.forwarded = 0  # outbox entries appended to their targets


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def snapshot(spec: ActorSpec, partition: int, c: Counters) -> PartitionStatistics:
    ordered = sorted(c.latencies)
    return PartitionStatistics(
        actor=spec.name,
        stream=spec.stream.name,
        partition=partition,
        state=c.state.value,
        epoch=c.epoch,
        processed=c.processed,
        acked=c.acked,
        failed=c.failed,
        dead_lettered=c.dead_lettered,
        trimmed=c.trimmed,
        restarts=c.restarts,
        last_error=c.last_error,
        last_dead_letter=c.last_dead_letter,
        handler_p50=_percentile(ordered, 0.5),
        handler_p99=_percentile(ordered, 0.99),
        streak=c.failures.streak,
        backoff=c.backoff if c.state is PartitionState.BACKING_OFF else None,
        in_flight=c.in_flight,
        concurrency=spec.settings.in_flight(spec.form),
        table_keys=c.tables() if c.tables is not None else None,
        committed=c.committed,
        restore_seconds=c.restore_seconds,
        late_events=sum(c.late.values()),
        ticks=c.ticks,
        outbox=c.outbox,
        forwarded=c.forwarded,
    )
