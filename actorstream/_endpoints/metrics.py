"""Prometheus metrics (the ``metrics`` extra): a custom collector over a ``WorkerSample``.

Why a collector and not ``Counter.inc()`` calls in the runtime: the runtime already counts
handled events, errors, dead letters and restarts for ``statistics()``; reading those at scrape
time costs the per-event path nothing, whereas a labelled ``Counter.inc`` per event costs a
lock and a dict lookup. The names and labels below are a contract (docs/metrics.md).

Imported only when metrics are served: importing it imports ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._ops.durations import Durations
from .view import WorkerSample

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: name -> (type, help, labels): the contract, also checked by tests and listed in docs.
METRICS: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "actorstream_events_handled_total": (
        "counter", "Events handled (acknowledged as done) by this worker's partition actors.",
        ("app", "stream", "actor", "partition")),
    "actorstream_handler_errors_total": (
        "counter", "Handler calls that raised, by exception type.",
        ("app", "stream", "actor", "partition", "error_type")),
    "actorstream_dead_letters_total": (
        "counter", "Events moved to the dead-letter stream, by reason.",
        ("app", "stream", "actor", "partition", "kind")),
    "actorstream_handler_duration_seconds": (
        "histogram", "Handler call duration in seconds.", ("app", "stream", "actor")),
    "actorstream_partition_lag": (
        "gauge", "Entries of an owned partition not yet delivered to its consumer group.",
        ("app", "stream", "partition")),
    "actorstream_partition_pending": (
        "gauge", "Entries of an owned partition delivered but not yet acknowledged.",
        ("app", "stream", "partition")),
    "actorstream_table_keys": (
        "gauge", "Keys a table holds in a partition this worker owns (loaded in memory).",
        ("app", "stream", "actor", "partition", "table")),
    "actorstream_partitions_owned": (
        "gauge", "Partition leases this worker holds.", ("app",)),
    "actorstream_actor_restarts_total": (
        "counter", "Restarts of partition actors by their supervisor.",
        ("app", "actor", "partition")),
    "actorstream_rebalances_total": (
        "counter", "Ownership changes (partitions acquired or released) by this worker.",
        ("app",)),
    "actorstream_leases_lost_total": (
        "counter", "Leases this worker lost (expired, taken over, refused, self-fenced).",
        ("app",)),
    "actorstream_redis_errors_total": (
        "counter", "Redis errors seen by the runtime (connection, timeout, OOM, ...), by type.",
        ("app", "error")),
    "actorstream_late_events_total": (
        "counter", "Events that came after their window closed, by windowed table (not counted).",
        ("app", "stream", "actor", "partition", "table")),
    "actorstream_events_sent_total": (
        "counter", "Events written by producers in this process.", ("app", "stream")),
}


def _family(name: str) -> Metric:
    kind, doc, labels = METRICS[name]
    short = name.removesuffix("_total") if kind == "counter" else name
    if kind == "counter":
        return CounterMetricFamily(short, doc, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(short, doc, labels=labels)
    return HistogramMetricFamily(short, doc, labels=labels)


class WorkerCollector(Collector):
    """Turns the current ``WorkerSample`` (from ``source``) into metric families at scrape time."""

    def __init__(self, source: Callable[[], WorkerSample]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return [_family(name) for name in METRICS]

    def collect(self) -> Iterator[Metric]:
        view = self._source()
        app = view.app
        fams = {name: _family(name) for name in METRICS}

        def add(name: str, labels: list[str], value: float) -> None:
            fams[name].add_metric(labels, value)  # type: ignore[attr-defined]

        durations: dict[tuple[str, str], list[Durations]] = {}
        for p in view.partitions:
            part = str(p.partition)
            add("actorstream_events_handled_total", [app, p.stream, p.actor, part], p.handled)
            for error_type, n in sorted(p.errors.items()):
                add("actorstream_handler_errors_total",
                    [app, p.stream, p.actor, part, error_type], n)
            for kind, n in sorted(p.dead_letters.items()):
                add("actorstream_dead_letters_total", [app, p.stream, p.actor, part, kind], n)
            add("actorstream_actor_restarts_total", [app, p.actor, part], p.restarts)
            for table, n in sorted(p.late.items()):
                add("actorstream_late_events_total", [app, p.stream, p.actor, part, table], n)
            for table, n in sorted(p.table_keys.items()):
                add("actorstream_table_keys", [app, p.stream, p.actor, part, table], n)
            if p.durations is not None:
                durations.setdefault((p.stream, p.actor), []).append(p.durations)
        hist = fams["actorstream_handler_duration_seconds"]
        for (stream, actor), parts in sorted(durations.items()):
            merged = Durations.merged(parts)
            hist.add_metric(  # type: ignore[attr-defined]
                [app, stream, actor], buckets=merged.cumulative(), sum_value=merged.sum
            )
        for (stream, partition), backlog in sorted(view.backlog.items()):
            if backlog.lag is not None:
                add("actorstream_partition_lag", [app, stream, str(partition)], backlog.lag)
            add("actorstream_partition_pending", [app, stream, str(partition)], backlog.pending)
        add("actorstream_partitions_owned", [app], view.owned)
        add("actorstream_rebalances_total", [app], view.rebalances)
        add("actorstream_leases_lost_total", [app], view.leases_lost)
        for error, n in sorted(view.redis_errors.items()):
            add("actorstream_redis_errors_total", [app, error], n)
        for stream, n in sorted(view.sent.items()):
            add("actorstream_events_sent_total", [app, stream], n)
        yield from fams.values()


def exposition(view: WorkerSample, *, include_default: bool = True) -> bytes:
    """The text exposition of ``view``, followed by the process-wide default registry.

    The default registry carries the process/GC collectors and whatever metrics the
    application registered itself, so one scrape covers both.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(lambda: view))
    body = generate_latest(registry)
    if include_default:
        body += generate_latest(REGISTRY)
    return body
