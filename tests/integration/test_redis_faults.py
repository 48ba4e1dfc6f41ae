"""Redis itself failing under a running worker: kill -9 and restart (AOF), pause."""

from __future__ import annotations

import trio

from actorstream import LeaseTiming, Record, System, running
from actorstream.testing import RedisServer

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    order_id: int
    amount: int


async def _wait(pred: object, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.02)


async def test_worker_survives_redis_kill_9_and_restart(aof_redis_server: RedisServer) -> None:
    server = aof_redis_server
    system = System("rk", server.url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order, partitions=4, key="order_id")
    seen: dict[int, list[int]] = {}

    @system.actor(orders)
    async def bill(order: Order) -> None:
        seen.setdefault(order.order_id, []).append(order.amount)

    async with running(system) as runtime:
        async with system:
            await orders.send_many([Order(order_id=i % 8, amount=i) for i in range(200)])
        await _wait(lambda: sum(map(len, seen.values())) >= 200, 15)
        await trio.sleep(1.2)  # let AOF everysec flush the acks
        server.kill()
        await trio.sleep(0.5)
        states = {p.state for p in runtime.statistics().partitions}
        server.restart()
        # The worker reconnects by itself (no crash, no escalation) and carries on.
        async with system:
            for _ in range(50):
                try:
                    await orders.send_many(
                        [Order(order_id=i % 8, amount=i) for i in range(200, 300)]
                    )
                    break
                except Exception:  # still coming up (LOADING) or reconnecting
                    await trio.sleep(0.1)
        await _wait(lambda: sum(map(len, seen.values())) >= 300, 30)
        stats = runtime.statistics()
    firsts = {k: sorted(set(v)) for k, v in seen.items()}
    assert set().union(*map(set, firsts.values())) == set(range(300))
    for k, amounts in seen.items():  # per key, first deliveries stay in order
        first_seen: list[int] = []
        for a in amounts:
            if a not in first_seen:
                first_seen.append(a)
        assert first_seen == sorted(first_seen), k
    assert "running" in {p.state for p in stats.partitions}
    assert all(p.restarts == 0 for p in stats.partitions), stats.partitions  # not a crash
    assert states  # snapshot taken while Redis was down did not raise


async def test_redis_paused_past_the_renew_interval(redis_server: RedisServer) -> None:
    system = System("rp", redis_server.url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order, partitions=2, key="order_id")
    seen: list[int] = []

    @system.actor(orders)
    async def bill(order: Order) -> None:
        seen.append(order.amount)

    async with running(system) as runtime:
        async with system:
            await orders.send_many([Order(order_id=1, amount=i) for i in range(10)])
        await _wait(lambda: len(seen) == 10, 15)
        redis_server.pause()
        await trio.sleep(1.5)  # longer than renew_interval, shorter than the TTL
        redis_server.resume()
        async with system:
            await orders.send_many([Order(order_id=1, amount=i) for i in range(10, 20)])
        await _wait(lambda: len(seen) >= 20, 20)
        stats = runtime.statistics()
    assert seen[:20] == list(range(20))
    assert all(p.restarts == 0 for p in stats.partitions)
    assert not stats.supervisor.gave_up


async def test_epoch_regression_is_detected_and_the_epoch_raised(redis_server: RedisServer) -> None:
    """Redis lost the lease and epoch keys (a failover to a stale replica, a restart without
    persistence): the worker notices, reports it, and re-acquires with an epoch above any it
    has seen, so a holder of an old epoch could never pass the fence again."""
    system = System("er", redis_server.url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order)
    seen: list[int] = []

    @system.actor(orders)
    async def bill(order: Order) -> None:
        seen.append(order.amount)

    epoch_key = "as:{er:orders:0}:epoch:bill"
    lease_key = "as:{er:orders:0}:lease:bill"
    async with running(system) as runtime:
        async with system:
            client = system.client()
            await client.execute("SET", epoch_key, 41)  # as if many earlier owners existed
            await client.execute("DEL", lease_key)
            await _wait(lambda: any(p.epoch == 42 for p in runtime.statistics().partitions), 15)
            await orders.send(Order(order_id=1, amount=1))
            await _wait(lambda: seen == [1], 15)
            # Data loss: the epoch and lease keys vanish.
            await client.execute("DEL", epoch_key, lease_key)
            await orders.send(Order(order_id=1, amount=2))
            await _wait(lambda: seen[-1:] == [2], 20)
            epoch_now = int(await client.execute("GET", epoch_key))
        kinds = [kind for _t, kind, _m in runtime.events]
    assert epoch_now > 42
    assert "epoch-regression" in kinds
