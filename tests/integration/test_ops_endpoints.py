"""/metrics, /healthz and /readyz of a real worker against a real Redis."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio

from actorstream import LeaseTiming, Record, System
from actorstream._core.deadletter import DEAD_LETTER_KINDS
from actorstream._ops.http import http_get
from actorstream._transport import Client
from actorstream.testing import RedisServer

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

FAST_LEASES = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    order_id: int
    amount: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def get(port: int, path: str) -> tuple[int, str]:
    status, body = await http_get("127.0.0.1", port, path)
    return status, body.decode()


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.02)


def stopped(system: System) -> Any:
    async def check() -> bool:
        return system._worker is None

    return check


async def xinfo(url: str, key: str) -> dict[str, Any]:
    client = Client.from_url(url)
    async with client:
        reply = await client.execute("XINFO", "GROUPS", key)
    for group in reply:
        pairs = dict(zip(group[::2], group[1::2], strict=True))
        if pairs[b"name"] == b"bill":
            return {k.decode(): v for k, v in pairs.items()}
    raise AssertionError(f"no group bill on {key}")


async def test_metrics_after_n_events_match_counts_and_xinfo(redis_url: str) -> None:
    # A name of its own: events_sent_total counts every producer of this (pytest) process.
    system = System("metricshop", redis_url, install_signal_handlers=False,
                    lease_timing=FAST_LEASES, metrics_port=0, metrics_host="127.0.0.1")
    orders = system.stream("orders", record=Order, partitions=4, key="order_id")
    handled = 0
    crashed = False
    gate = trio.Event()

    @system.actor(orders, batch_size=10)
    async def bill(order: Order) -> None:
        nonlocal handled, crashed
        if order.order_id == 3 and not gate.is_set():
            await gate.wait()  # partition of key 3 holds its batch: pending > 0, lag > 0
        if order.amount == -1 and not crashed:
            crashed = True
            raise ValueError("transient")  # one crash: counted once, then redelivered
        handled += 1

    n = 200
    async with system:
        await orders.send_many(Order(order_id=i % 3, amount=i) for i in range(n))
        await orders.send(Order(order_id=1, amount=-1))
        poison_partition = orders.partition_of(Order(order_id=2, amount=0))
        await system.client().execute(
            "XADD", orders.stream_key(poison_partition), "*", "f", "json", "d", "{not json"
        )
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(system.start)
        port = system.ops_port

        async def all_handled() -> bool:
            return handled == n + 1

        await wait_for(all_handled)
        # Now block one partition mid-batch and queue more behind it.
        async with system:
            await orders.send_many(Order(order_id=3, amount=i) for i in range(25))
        blocked = orders.partition_of(Order(order_id=3, amount=0))

        async def blocked_has_pending() -> bool:
            info = await xinfo(redis_url, orders.stream_key(blocked))
            return int(info.get("pending", 0)) > 0

        await wait_for(blocked_has_pending)

        async def others_acked() -> bool:  # an idle partition's acks ride on its next wait
            for p in range(4):
                if p != blocked and int((await xinfo(redis_url, orders.stream_key(p)))["pending"]):
                    return False
            return True

        await wait_for(others_acked)

        status, text = await get(port, "/metrics")
        assert status == 200
        handled_samples = samples(text, "actorstream_events_handled_total")
        assert sum(v for _, v in handled_samples) == n + 1
        assert all(lab["app"] == "metricshop" and lab["stream"] == "orders"
                   and lab["actor"] == "bill"
                   for lab, _ in handled_samples)
        owned = samples(text, "actorstream_partitions_owned")
        assert owned == [({"app": "metricshop"}, float(len(worker.ownership.leases)))]
        assert owned[0][1] == 4
        sent = samples(text, "actorstream_events_sent_total")
        assert sent == [({"app": "metricshop", "stream": "orders"}, float(n + 1 + 25))]

        dead = samples(text, "actorstream_dead_letters_total")
        assert [(lab["partition"], lab["kind"], v) for lab, v in dead if v] == [
            (str(poison_partition), "decode:json", 1.0)
        ]
        # Every known kind has its series from the start, at 0 until it happens.
        assert {(lab["partition"], lab["kind"]) for lab, _ in dead} == {
            (str(p), kind) for p in range(4) for kind in DEAD_LETTER_KINDS
        }
        errors = samples(text, "actorstream_handler_errors_total")
        assert [(lab["error_type"], v) for lab, v in errors] == [("ValueError", 1.0)]
        restarts = samples(text, "actorstream_actor_restarts_total")
        assert sum(v for _, v in restarts) == 0  # a handler failure is contained, no restart
        # Every handler call, the failed one included (n + 1 handled, 1 raised).
        count = samples(text, "actorstream_handler_duration_seconds_count")
        assert count == [
            ({"app": "metricshop", "stream": "orders", "actor": "bill"}, float(n + 2))
        ]
        inf = [v for lab, v in samples(text, "actorstream_handler_duration_seconds_bucket")
               if lab["le"] == "+Inf"]
        assert inf == [float(n + 2)]

        info = await xinfo(redis_url, orders.stream_key(blocked))
        lag = {lab["partition"]: v for lab, v in samples(text, "actorstream_partition_lag")}
        pending = {lab["partition"]: v
                   for lab, v in samples(text, "actorstream_partition_pending")}
        assert pending[str(blocked)] == int(info["pending"]) >= 1
        assert lag[str(blocked)] == int(info["lag"])
        assert pending[str(blocked)] + lag[str(blocked)] == 25
        assert set(pending) == {"0", "1", "2", "3"}
        assert all(pending[p] == 0 for p in pending if p != str(blocked))

        kinds = {f.name: f.type for f in text_string_to_metric_families(text)}
        assert kinds["actorstream_events_handled"] == "counter"
        assert kinds["actorstream_partition_lag"] == "gauge"
        assert kinds["actorstream_handler_duration_seconds"] == "histogram"

        gate.set()
        worker.request_stop()
        await wait_for(stopped(system))


async def test_readyz_503_before_join_and_while_draining_200_between(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    system = System("ready", redis_server.url, install_signal_handlers=False,
                    lease_timing=FAST_LEASES, shutdown_grace=20.0, metrics_port=port,
                    metrics_host="127.0.0.1")
    jobs = system.stream("jobs", record=Order, partitions=2, key="order_id")
    started = trio.Event()
    release = trio.Event()

    @system.actor(jobs)
    async def work(order: Order) -> None:
        started.set()
        await release.wait()  # holds the drain open

    async def listening() -> bool:
        try:
            await get(port, "/healthz")
        except OSError:
            return False
        return True

    async with trio.open_nursery() as nursery:
        redis_server.pause()  # the worker waits for Redis: served, alive, not ready
        try:
            nursery.start_soon(system.start)
            await wait_for(listening)
            assert await get(port, "/healthz") == (200, "ok\n")
            status, reason = await get(port, "/readyz")
            assert (status, reason.strip()) == (503, "not running")
        finally:
            redis_server.resume()

        async def ready() -> bool:
            return (await get(port, "/readyz"))[0] == 200

        await wait_for(ready)
        async with system:
            await jobs.send(Order(order_id=1, amount=1))
        with trio.fail_after(20):
            await started.wait()
        worker = system._worker
        assert worker is not None
        worker.request_stop()
        status, reason = await get(port, "/readyz")
        assert (status, reason.strip()) == (503, "draining")
        assert (await get(port, "/healthz"))[0] == 200
        release.set()
        await wait_for(stopped(system))
    with pytest.raises(OSError):  # the endpoints end with the worker
        await get(port, "/healthz")


async def test_readyz_503_when_redis_is_unreachable(redis_server: RedisServer) -> None:
    system = System("cut", redis_server.url, install_signal_handlers=False,
                    lease_timing=FAST_LEASES, metrics_port=0, metrics_host="127.0.0.1")
    stream = system.stream("s", record=Order, partitions=1)

    @system.actor(stream)
    async def noop(order: Order) -> None:
        pass

    async with trio.open_nursery() as nursery:
        worker = await nursery.start(system.start)
        port = system.ops_port

        async def ready() -> bool:
            return (await get(port, "/readyz"))[0] == 200

        await wait_for(ready)
        redis_server.pause()
        try:
            status, reason = await get(port, "/readyz")
            assert status == 503 and reason.startswith("redis unreachable"), reason
            assert (await get(port, "/healthz"))[0] == 200
            status, text = await get(port, "/metrics")  # counters still served, without lag
            assert status == 200 and "actorstream_partitions_owned" in text
        finally:
            redis_server.resume()
        await wait_for(ready)
        worker.request_stop()


async def test_http_server_rejects_bad_requests(redis_url: str) -> None:
    from actorstream._endpoints.server import serve_ops

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_ops, "http", lambda: None, 0, "127.0.0.1")
        assert (await get(port, "/nope"))[0] == 404
        assert (await get(port, "/readyz")) == (503, "not running\n")
        status, text = await get(port, "/metrics")
        assert status == 200 and "actorstream_partitions_owned" in text
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"POST /metrics HTTP/1.1\r\n\r\n")
            reply = await stream.receive_some(1000)
        assert reply.startswith(b"HTTP/1.1 405")
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /" + b"x" * (3 * 4096 - 5))
            reply = await stream.receive_some(1000)
        assert reply.startswith(b"HTTP/1.1 431")
        nursery.cancel_scope.cancel()


def test_metrics_port_is_validated() -> None:
    from actorstream import ConfigError

    with pytest.raises(ConfigError, match=r"metrics_port must be a TCP port 0\.\.65535"):
        System("bad", metrics_port=70000)


async def test_redis_errors_and_lost_leases_are_counted(redis_server: RedisServer) -> None:
    system = System("lost", redis_server.url, install_signal_handlers=False,
                    lease_timing=FAST_LEASES, metrics_port=0, metrics_host="127.0.0.1")
    stream = system.stream("s", record=Order, partitions=2, key="order_id")

    @system.actor(stream)
    async def noop(order: Order) -> None:
        pass

    async with trio.open_nursery() as nursery:
        await nursery.start(system.start)
        port = system.ops_port

        async def owns_both() -> bool:
            text = (await get(port, "/metrics"))[1]
            return samples(text, "actorstream_partitions_owned")[0][1] == 2

        await wait_for(owns_both)
        redis_server.kill()  # longer than the lease TTL: every lease is self-fenced

        async def counted() -> bool:
            text = (await get(port, "/metrics"))[1]
            errors = samples(text, "actorstream_redis_errors_total")
            lost = samples(text, "actorstream_leases_lost_total")[0][1]
            owned = samples(text, "actorstream_partitions_owned")[0][1]
            return sum(v for _, v in errors) > 0 and lost == 2 and owned == 0

        await wait_for(counted)
        text = (await get(port, "/metrics"))[1]
        counted_errors = samples(text, "actorstream_redis_errors_total")
        assert {lab["error"] for lab, v in counted_errors if v} <= {
            "ConnectionError", "TimeoutError"}
        nursery.cancel_scope.cancel()


def test_a_busy_metrics_port_is_a_usage_error_not_redis_unreachable(
    redis_url: str, tmp_path: Any
) -> None:
    import subprocess
    import sys

    (tmp_path / "busy_app.py").write_text(
        "from actorstream import System\nsystem = System('busy')\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "actorstream", "worker", "busy_app:system",
             "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--url", redis_url],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert f"metrics port 127.0.0.1:{port}" in done.stderr
    assert "Redis" not in done.stderr.splitlines()[-1]


WITHOUT_EXTRAS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("prometheus_client", "opentelemetry"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())

import trio
from actorstream import Record, System
from actorstream._ops.http import http_get

system = System("bare", sys.argv[1], install_signal_handlers=False, metrics_port=0,
                metrics_host="127.0.0.1")


class Order(Record):
    order_id: int


orders = system.stream("orders", record=Order, partitions=2, key="order_id")
handled = trio.Event()


@system.actor(orders)
async def bill(order: Order) -> None:
    handled.set()


async def main():
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(system.start)
        async with system:
            await orders.send(Order(order_id=1))
        with trio.fail_after(20):
            await handled.wait()
        port = system.ops_port
        print("healthz", (await http_get("127.0.0.1", port, "/healthz"))[0])
        print("metrics", (await http_get("127.0.0.1", port, "/metrics"))[0])
        entry = await system.client().execute("XRANGE", orders.stream_key(0), "-", "+")
        entry += await system.client().execute("XRANGE", orders.stream_key(1), "-", "+")
        print("fields", len(entry[0][1]))
        worker.request_stop()
    bad = [m for m in sys.modules if m.startswith(("prometheus_client", "opentelemetry"))]
    print("imported", bad)

trio.run(main)
"""


def test_a_worker_without_the_extras_serves_health_and_traces_nothing(
    redis_url: str, tmp_path: Any
) -> None:
    import subprocess
    import sys

    script = tmp_path / "bare.py"
    script.write_text(WITHOUT_EXTRAS)
    done = subprocess.run([sys.executable, str(script), redis_url], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "healthz 200" in lines
    assert "metrics 501" in lines  # with the install hint
    assert "fields 4" in lines  # f, tag, d, payload: no trace context written
    assert "imported []" in lines
    assert "pip install 'actorstream[metrics]'" in done.stderr
