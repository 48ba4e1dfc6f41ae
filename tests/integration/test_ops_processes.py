"""Scenario 30 (docs/scenarios.md): ``actorstream worker TARGET --processes 2`` on 16 partitions."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from actorstream import Record, System
from actorstream._core.keys import lease_key
from actorstream._ops.http import http_get
from actorstream._transport import Client
from actorstream.testing import RedisServer

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

APPS = Path(__file__).parent / "apps"
N = 3000


class Order(Record):  # the wire shape of orders_app.Order
    key: int
    seq: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def owners(client: Client) -> list[str | None]:
    replies = await client.pipeline(
        [("GET", lease_key("orders", "orders", p, "handle")) for p in range(16)]
    )
    return [r.decode() if r else None for r in replies]


def pid_of(worker_id: str) -> int:
    return int(worker_id.rsplit("-", 2)[1])


async def metric_sum(port: int, name: str) -> float:
    status, body = await http_get("127.0.0.1", port, "/metrics")
    assert status == 200
    return sum(
        s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
        if s.name == name
    )


async def test_two_processes_share_partitions_survive_kill_9_and_stop_on_sigterm(
    redis_server: RedisServer, worker_process: Any
) -> None:
    port = free_port()
    parent = worker_process(
        "-m", "actorstream", "worker", "orders_app:system", "--processes", "2",
        "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
        redis_url=redis_server.url, pythonpath=[APPS], cwd=APPS,
        env={"PARTITIONS": "16", "APP_NAME": "orders", "HANDLE_DELAY": "0.004",
             "BATCH_SIZE": "20"},
    )
    client = Client.from_url(redis_server.url)
    async with client:
        with trio.fail_after(60):
            while True:
                found = await owners(client)
                pids = {pid_of(o) for o in found if o}
                if all(found) and len(pids) == 2:
                    break
                await trio.sleep(0.1)
        first_pids = pids
        assert parent.pid not in first_pids
        with trio.fail_after(20):
            while await metric_sum(port, "actorstream_partitions_owned") != 16:
                await trio.sleep(0.1)

        producer = System("orders", redis_server.url, install_signal_handlers=False)
        orders = producer.stream("orders", record=Order, partitions=16, key="key")
        async with producer:
            await orders.send_many(Order(key=i % 160, seq=i) for i in range(N))
        with trio.fail_after(60):
            while await client.execute("LLEN", "orders:handled") < N // 4:
                await trio.sleep(0.02)
        victim = min(first_pids)
        import os
        import signal

        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(60):
            while True:
                found = await owners(client)
                pids = {pid_of(o) for o in found if o}
                if all(found) and len(pids) == 2 and victim not in pids:
                    break
                await trio.sleep(0.1)
        assert len(pids - first_pids) == 1  # the victim's replacement
        with trio.fail_after(90):
            while True:
                handled = await client.execute("LRANGE", "orders:handled", 0, -1)
                seen = {tuple(h.decode().split(":")[:2]) for h in handled}
                if len(seen) == N:
                    break
                await trio.sleep(0.1)
        assert seen == {(str(i % 160), str(i)) for i in range(N)}  # nothing lost
        duplicates = len(handled) - N
        assert await metric_sum(port, "actorstream_partitions_owned") == 16
        assert await metric_sum(port, "actorstream_events_handled_total") > 0
        status, _ = await http_get("127.0.0.1", port, "/readyz")
        assert status == 200
        print(f"--processes 2, kill -9 of one child: lost 0, duplicates {duplicates}")

        parent.terminate()
        with trio.fail_after(60):
            code = await parent.wait_exited()
        assert code == 0, parent.output()[-3000:]
        assert not any(await owners(client))  # leases released by the graceful drain
    assert "exited with -9; restarting" in parent.output()


async def test_a_second_signal_forces_the_children_and_the_worst_status_wins(
    redis_server: RedisServer, worker_process: Any
) -> None:
    parent = worker_process(
        "-m", "actorstream", "worker", "orders_app:system", "--processes", "2",
        redis_url=redis_server.url, pythonpath=[APPS], cwd=APPS,
        env={"PARTITIONS": "4", "APP_NAME": "force", "HANDLE_DELAY": "30"},
    )
    producer = System("force", redis_server.url, install_signal_handlers=False)
    orders = producer.stream("orders", record=Order, partitions=4, key="key")
    async with producer:
        client = producer.client()
        with trio.fail_after(60):
            while True:
                found = await client.pipeline(
                    [("GET", lease_key("force", "orders", p, "handle")) for p in range(4)]
                )
                if all(found) and len({pid_of(o.decode()) for o in found}) == 2:
                    break
                await trio.sleep(0.1)
        await orders.send_many(Order(key=k, seq=k) for k in range(8))
        with trio.fail_after(30):  # handlers are in flight (30 s each): a drain would wait
            while True:
                groups = await client.pipeline(
                    [("XINFO", "GROUPS", orders.stream_key(p)) for p in range(4)]
                )
                if sum(int(dict(zip(g[::2], g[1::2], strict=True))[b"pending"])
                       for reply in groups if not isinstance(reply, Exception)
                       for g in reply) > 0:
                    break
                await trio.sleep(0.05)
    parent.terminate()
    await trio.sleep(0.5)
    parent.terminate()
    with trio.fail_after(20):
        code = await parent.wait_exited()
    assert code == 130, parent.output()[-3000:]
