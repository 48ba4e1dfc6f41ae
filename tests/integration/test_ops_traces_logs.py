"""One trace from send to the handler span; JSON logs of a real worker process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from actorstream import LeaseTiming, Record, System

FAST_LEASES = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    order_id: int
    amount: int


async def test_one_trace_from_send_to_the_handler_span(redis_url: str) -> None:
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
        system = System("traced", redis_url, install_signal_handlers=False,
                        lease_timing=FAST_LEASES)
        orders = system.stream("orders", record=Order, partitions=4, key="order_id")
        seen: list[int] = []
        failed_once = False
        done = trio.Event()

        @system.actor(orders)
        async def bill(order: Order) -> None:
            nonlocal failed_once
            if order.amount == 2 and not failed_once:
                failed_once = True
                raise LookupError("first delivery fails")
            seen.append(order.amount)
            if len(seen) == 2:
                done.set()

        tracer = provider.get_tracer("test")
        async with trio.open_nursery() as nursery:
            worker = await nursery.start(system.start)
            async with system:
                with tracer.start_as_current_span("checkout"):
                    entry_id = await orders.send(Order(order_id=7, amount=1))
                await orders.send_many([Order(order_id=8, amount=2)])
            with trio.fail_after(20):
                await done.wait()
            worker.request_stop()
        spans = exporter.get_finished_spans()
    finally:
        tracing.use_tracer_provider(None)

    checkout = next(s for s in spans if s.name == "checkout")
    trace_id = checkout.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    send = next(s for s in in_trace if s.name == "send orders")
    process = next(s for s in in_trace if s.name == "process orders")
    assert {s.name for s in in_trace} == {"checkout", "send orders", "process orders"}
    assert send.kind is trace.SpanKind.PRODUCER and send.parent.span_id == checkout.context.span_id
    assert process.kind is trace.SpanKind.CONSUMER
    assert process.parent.span_id == send.context.span_id
    partition = orders.partition_of(Order(order_id=7, amount=1))
    assert dict(process.attributes) == {
        "messaging.system": "redis",
        "messaging.destination.name": "orders",
        "messaging.consumer.group.name": "bill",
        "messaging.destination.partition.id": str(partition),
        "messaging.message.id": entry_id,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "actorstream.app": "traced",
    }
    # The send_many without a current span started its own trace: a failed delivery (the
    # crash) and the redelivery are two CONSUMER spans in it, the first with error.type.
    other = [s for s in spans if s.name == "process orders" and s.context.trace_id != trace_id]
    assert len(other) == 2
    failed = [s for s in other if s.status.status_code is trace.StatusCode.ERROR]
    assert len(failed) == 1 and failed[0].attributes["error.type"] == "LookupError"
    assert len({s.context.trace_id for s in other}) == 1


class KeyOnly(Record):  # the wire shape of the app's Order
    order_id: int


APP = """
import os
from actorstream import LeaseTiming, Record, System

system = System("jsonlog", lease_timing=LeaseTiming(ttl=3.0, renew_interval=1.0,
                heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5))


class Order(Record):
    order_id: int


orders = system.stream("orders", record=Order, partitions=2, key="order_id")
crashed = False


@system.actor(orders)
async def bill(order: Order) -> None:
    global crashed
    if not crashed:
        crashed = True
        raise RuntimeError("handler crash for the log test")
    await system.client().execute("SET", "jsonlog:handled", order.order_id)
"""


async def test_json_logs_parse_line_by_line_with_a_handler_crash_traceback(
    redis_url: str, worker_process: Any, tmp_path: Path
) -> None:
    (tmp_path / "jsonlog_app.py").write_text(textwrap.dedent(APP))
    worker = worker_process(
        "-m", "actorstream", "worker", "jsonlog_app:system", "--log-format", "json", "-v",
        redis_url=redis_url, pythonpath=[tmp_path], cwd=tmp_path,
    )
    with trio.fail_after(30):
        await worker.wait_for_output("Ctrl-C to stop")
    producer = System("jsonlog", redis_url, install_signal_handlers=False)
    stream = producer.stream("orders", record=KeyOnly, partitions=2, key="order_id")
    async with producer:
        entry_id = await stream.send(KeyOnly(order_id=5))
        with trio.fail_after(30):
            while await producer.client().execute("GET", "jsonlog:handled") != b"5":
                await trio.sleep(0.05)
    worker.terminate()
    with trio.fail_after(30):
        assert await worker.wait_exited() == 0
    lines = [json.loads(line) for line in worker.output().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in lines)
    crash = [d for d in lines if "crashed" in d["message"]]
    assert len(crash) == 1, lines
    doc = crash[0]
    assert doc["level"] == "error" and doc["logger"] == "actorstream.partition"
    assert doc["app"] == "jsonlog" and doc["stream"] == "orders" and doc["actor"] == "bill"
    assert doc["partition"] == stream.partition_of(KeyOnly(order_id=5))
    assert doc["entry_id"] == entry_id
    assert doc["worker"].split("-")[-2].isdigit()  # host-pid-suffix
    assert doc["error_type"] == "RuntimeError"
    assert "Traceback (most recent call last)" in doc["traceback"]
    assert "RuntimeError: handler crash for the log test" in doc["traceback"]
    assert any(d["message"].startswith("worker of 'jsonlog' stopped") for d in lines)
