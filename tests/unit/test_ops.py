"""Ops pieces that need no Redis: log formats, duration buckets, scrape merging, tracing."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from actorstream._ops import logs
from actorstream._ops.durations import BOUNDS, Durations


def test_json_lines_parse_with_context_and_traceback() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("actorstream.test_ops")
    log.addHandler(handler)
    log.propagate = False
    try:
        logs.bind(worker="w-1", app="shop")
        with logs.bound(stream="orders", partition=3):
            log.warning("plain %s", "line")
            try:
                raise ValueError("boom")
            except ValueError:
                log.error("handler crashed", exc_info=True, extra={"entry_id": "1-0"})
        log.warning("outside")
    finally:
        log.removeHandler(handler)
        logs.log_context.set({})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    first, crash, outside = lines
    assert first["message"] == "plain line" and first["level"] == "warning"
    assert first["logger"] == "actorstream.test_ops"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert (first["worker"], first["app"], first["stream"], first["partition"]) == (
        "w-1", "shop", "orders", 3)
    assert crash["entry_id"] == "1-0"
    assert crash["error_type"] == "ValueError"
    assert "Traceback" in crash["traceback"] and "ValueError: boom" in crash["traceback"]
    assert "stream" not in outside and outside["app"] == "shop"


def test_text_lines_have_timestamps() -> None:
    out = io.StringIO()
    logs.configure_logging(level=logging.INFO, fmt="text", stream=out)
    try:
        logging.getLogger("actorstream.x").info("hello")
    finally:
        logs.configure_logging(level=logging.WARNING, stream=io.StringIO())
        for h in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(h)
    line = out.getvalue().strip()
    assert line.endswith("INFO actorstream.x: hello")
    assert line[:4].isdigit() and line[10] == "T" and line[23] == "Z"


def test_configure_logging_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure_logging(fmt="xml")


BLOCK_EXTRAS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prometheus_client", "opentelemetry"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


def test_without_extras_nothing_is_imported_and_no_logging_is_configured() -> None:
    code = BLOCK_EXTRAS + (
        "import logging, actorstream, actorstream.cli._worker\n"
        "from actorstream._ops import tracing\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "assert tracing.tracer() is None\n"
        "mine = [m for m in sys.modules if m in ('actorstream._endpoints.metrics',)]\n"
        "assert not mine, mine\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_durations_buckets_are_cumulative_and_merge() -> None:
    a, b = Durations(), Durations()
    for s in (0.00005, 0.0003, 0.0003, 2.0):
        a.observe(s)
    b.observe(100.0)
    b.observe(BOUNDS[0])  # on a bound: counted in that bucket (le is inclusive)
    merged = Durations.merged([a, b])
    cum = dict(merged.cumulative())
    assert merged.count == 6
    assert cum["0.0001"] == 2
    assert cum["0.0005"] == 4
    assert cum["2.5"] == 5
    assert cum["+Inf"] == 6
    assert merged.sum == pytest.approx(0.00005 + 0.0006 + 2.0 + 100.0 + BOUNDS[0])


def test_collector_exposes_exactly_the_contract() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from actorstream._endpoints.metrics import METRICS, exposition
    from actorstream._endpoints.view import Backlog, PartitionSample, WorkerSample

    d = Durations()
    d.observe(0.002)
    view = WorkerSample(
        app="shop",
        partitions=(
            PartitionSample("bill", "orders", 0, handled=5, restarts=1,
                          errors={"ValueError": 2}, dead_letters={"max_deliveries": 1},
                          durations=d, late={"per_minute": 2},
                          table_keys={"counts": 3}),
            PartitionSample("bill", "orders", 1, handled=7, restarts=0, durations=d),
        ),
        owned=2, rebalances=3, leases_lost=1, redis_errors={"ConnectionError": 4},
        sent={"orders": 12},
        backlog={("orders", 0): Backlog(lag=3, pending=2), ("orders", 1): Backlog(None, 0)},
    )
    text = exposition(view, include_default=False).decode()
    found: dict[str, set[tuple[str, ...]]] = {}
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            found.setdefault(s.name, set()).add(tuple(sorted(s.labels)))
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    for name, (kind, _doc, labels) in METRICS.items():
        sample = name + "_count" if kind == "histogram" else name
        assert sample in found, name
        expected = set(labels)
        assert {frozenset(x) for x in found[sample]} == {frozenset(expected)}, name
    assert values[("actorstream_handler_duration_seconds_count",
                   (("actor", "bill"), ("app", "shop"), ("stream", "orders")))] == 2
    assert values[("actorstream_partition_lag",
                   (("app", "shop"), ("partition", "0"), ("stream", "orders")))] == 3
    assert values[("actorstream_late_events_total",
                   (("actor", "bill"), ("app", "shop"), ("partition", "0"), ("stream", "orders"),
                    ("table", "per_minute")))] == 2
    # A partition whose lag Redis cannot tell has no lag sample (not a made-up 0).
    assert ("actorstream_partition_lag",
            (("app", "shop"), ("partition", "1"), ("stream", "orders"))) not in values


def test_known_label_sets_are_exported_at_zero_from_the_first_scrape() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from actorstream._core.classify import TRANSIENT_REDIS_ERRORS
    from actorstream._endpoints.metrics import exposition
    from actorstream._endpoints.view import idle_sample

    text = exposition(idle_sample("zeros", ["orders", "audit"]), include_default=False).decode()
    by_name: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            label = s.labels.get("stream") or s.labels.get("error") or ""
            by_name.setdefault(s.name, {})[label] = s.value
    assert by_name["actorstream_events_sent_total"] == {"orders": 0.0, "audit": 0.0}
    assert by_name["actorstream_redis_errors_total"] == {
        cls.__name__: 0.0 for cls in TRANSIENT_REDIS_ERRORS
    }


def test_parent_aggregate_sums_maxes_and_stays_monotonic_across_restarts() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from actorstream.cli._processes import Aggregate, Child

    def child_text(handled: int, part: str, owned: int, pending: int) -> str:
        return (
            "# TYPE actorstream_events_handled_total counter\n"
            f'actorstream_events_handled_total{{app="a",stream="s",actor="x",partition="{part}"}}'
            f" {handled}\n"
            "# TYPE actorstream_partitions_owned gauge\n"
            f'actorstream_partitions_owned{{app="a"}} {owned}\n'
            "# TYPE actorstream_partition_pending gauge\n"
            f'actorstream_partition_pending{{app="a",stream="s",partition="0"}} {pending}\n'
            "# TYPE python_gc_objects_collected_total counter\n"
            'python_gc_objects_collected_total{generation="0"} 5\n'
        )

    def parse(body: bytes) -> dict[tuple[str, str], float]:
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, s.labels.get("partition", ""))] = s.value
        return out

    agg = Aggregate()
    a, b = Child(0), Child(1)
    body, _ = agg.render([a, b], {0: child_text(10, "0", 8, 2), 1: child_text(5, "1", 8, 3)})
    got = parse(body)
    assert got[("actorstream_events_handled_total", "0")] == 10
    assert got[("actorstream_events_handled_total", "1")] == 5
    assert got[("actorstream_partitions_owned", "")] == 16
    assert got[("actorstream_partition_pending", "0")] == 3  # max, not sum
    assert not any(name.startswith("python_") for name, _ in got)
    # Child 0 dies and comes back counting from 0: the merged counter does not go down.
    agg.retire(a)
    body, _ = agg.render([a, b], {0: child_text(1, "0", 8, 0), 1: child_text(6, "1", 8, 0)})
    got = parse(body)
    assert got[("actorstream_events_handled_total", "0")] == 11
    assert got[("actorstream_events_handled_total", "1")] == 6


def test_tracing_inject_and_continue_with_in_memory_exporter() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from actorstream._ops import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        with tracing.send_span("shop", "orders", 1) as extra:
            assert extra[0] == b"traceparent"
        fields = [b"f", b"json", b"d", b"{}", *extra]
        t = tracing.tracer()
        with pytest.raises(KeyError), tracing.consumer_span(
            t, app="shop", stream="orders", actor="bill", partition=3, entry_id="1-0",
            fields=fields,
        ):
            raise KeyError("x")
    finally:
        tracing.use_tracer_provider(None)
    send, process = exporter.get_finished_spans()
    assert send.kind is trace.SpanKind.PRODUCER and process.kind is trace.SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.attributes["error.type"] == "KeyError"
    assert process.attributes["messaging.destination.partition.id"] == "3"
    assert process.attributes["messaging.consumer.group.name"] == "bill"
    assert process.attributes["messaging.message.id"] == "1-0"
    assert process.status.status_code is trace.StatusCode.ERROR


def test_tracing_is_off_without_a_provider() -> None:
    from actorstream._ops import tracing

    assert tracing.tracer() is None
    with tracing.send_span("a", "s", 1) as extra:
        assert extra == []
