"""Middleware, error hooks, retries, batch and iterator forms, against real Redis."""

from __future__ import annotations

from typing import Any

import trio

from actorstream import EventInfo, Events, LeaseTiming, Next, Outcome, Record, System, running

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    order_id: int
    amount: int


def make(url: str) -> tuple[System, Any]:
    system = System("feat", url, install_signal_handlers=False, lease_timing=FAST)
    return system, system.stream("orders", record=Order, partitions=2, key="order_id")


async def wait_for(pred: Any, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.01)


async def test_middleware_order_enrichment_and_failure_routing(redis_url: str) -> None:
    system, orders = make(redis_url)
    trail: list[str] = []
    handled: list[int] = []
    routed: list[tuple[int, str]] = []

    @system.middleware
    async def outer(event: Any, info: EventInfo, call_next: Next) -> None:
        trail.append(f"outer-before-{event.amount}")
        try:
            await call_next(event)
        except ValueError as exc:  # route failures ourselves: the event then counts as handled
            routed.append((event.amount, str(exc)))
        trail.append(f"outer-after-{event.amount}")

    async def inner(event: Any, info: EventInfo, call_next: Next) -> None:
        assert info.actor == "bill" and info.stream == "orders" and info.epoch >= 1
        trail.append(f"inner-{event.amount}")
        await call_next(Order(order_id=event.order_id, amount=event.amount * 10))

    @system.actor(orders, middleware=[inner])
    async def bill(order: Order) -> None:
        if order.amount == 20:
            raise ValueError("no twos")
        handled.append(order.amount)

    async with system:
        await orders.send_many([Order(order_id=1, amount=1), Order(order_id=1, amount=2),
                                Order(order_id=1, amount=3)])
        async with running(system) as rt:
            await wait_for(lambda: len(handled) == 2)
            await trio.sleep(0.1)
            (part,) = [p for p in rt.statistics().partitions if p.processed]
    assert handled == [10, 30]
    assert routed == [(2, "no twos")]
    assert trail[:3] == ["outer-before-1", "inner-1", "outer-after-1"]
    assert part.restarts == 0 and part.processed == 3


async def test_error_hook_outcomes(redis_url: str) -> None:
    system, orders = make(redis_url)
    calls: list[int] = []
    seen_errors: list[str] = []

    async def hook(event: Any, exc: Exception, info: EventInfo) -> Outcome | None:
        seen_errors.append(f"{event.amount}:{exc}")
        return {1: Outcome.SKIP, 2: Outcome.DEAD_LETTER}.get(event.amount)

    @system.actor(orders, on_error=hook, retries=2, retry_backoff=0.01, max_deliveries=10)
    async def bill(order: Order) -> None:
        calls.append(order.amount)
        if order.amount in (1, 2):
            raise RuntimeError(f"bad {order.amount}")

    async with system:
        await orders.send_many([Order(order_id=7, amount=a) for a in (0, 1, 2, 3)])
        async with running(system) as rt:
            await wait_for(lambda: calls[-1:] == [3])
            await trio.sleep(0.1)
            stats = [p for p in rt.statistics().partitions if p.acked or p.dead_lettered]
        client = system.client()
        p = orders.partition_of(Order(order_id=7, amount=0))
        dlq = await client.execute("XRANGE", f"as:{{feat:orders:{p}}}:dlq", "-", "+")
        pending = await client.execute("XPENDING", orders.stream_key(p), "bill")
    # each failing event tried 1 + 2 retries before the hook decides
    assert calls == [0, 1, 1, 1, 2, 2, 2, 3]
    assert seen_errors == ["1:bad 1", "2:bad 2"]
    assert len(dlq) == 1
    fields = dict(zip(dlq[0][1][::2], dlq[0][1][1::2], strict=True))
    assert fields[b"kind"] == b"handler" and b"bad 2" in fields[b"error"]
    assert b"RuntimeError" in fields[b"trace"]
    assert pending[0] == 0
    (part,) = stats
    assert part.processed == 2 and part.dead_lettered == 1 and part.restarts == 0


async def test_batch_form_with_max_wait(redis_url: str) -> None:
    system, orders = make(redis_url)
    batches: list[list[int]] = []

    @system.actor(orders, batch=True, batch_size=50, batch_wait=0.3)
    async def load(batch: list[Order]) -> None:
        batches.append([o.amount for o in batch])

    async with system:
        async with running(system):
            await trio.sleep(0.2)
            for i in range(30):
                await orders.send(Order(order_id=0, amount=i))
            await wait_for(lambda: sum(map(len, batches)) == 30)
    flat = [a for b in batches for a in b]
    assert flat == list(range(30))
    # 30 events sent one by one within the wait are handled in few batches, not 30
    assert len(batches) <= 5


async def test_iterator_form_and_take(redis_url: str) -> None:
    system, orders = make(redis_url)
    singles: list[int] = []
    groups: list[list[int]] = []
    other = system.stream("other", record=Order)

    @system.actor(orders, iterator=True)
    async def each(events: Events) -> None:
        async for order in events:
            singles.append(order.amount)

    @system.actor(other, iterator=True)
    async def grouped(events: Events) -> None:
        async for batch in events.take(10, within=0.2):
            groups.append([o.amount for o in batch])

    async with system:
        await orders.send_many([Order(order_id=3, amount=i) for i in range(25)])
        await other.send_many([Order(order_id=3, amount=i) for i in range(25)])
        async with running(system) as rt:
            await wait_for(lambda: len(singles) == 25 and sum(map(len, groups)) == 25)
            # Acks ride on the next read (within ACK_LINGER when the partitions are idle).
            await wait_for(lambda: sum(p.acked for p in rt.statistics().partitions) >= 48)
            acked = sum(p.acked for p in rt.statistics().partitions)
    assert singles == list(range(25))
    assert [a for g in groups for a in g] == list(range(25))
    assert max(map(len, groups)) == 10
    assert acked >= 48  # everything but possibly the last yielded item of each form


async def test_producer_decorator_sends_what_it_returns(redis_url: str) -> None:
    system, orders = make(redis_url)

    @system.producer(orders)
    async def new_order(n: int) -> Order:
        return Order(order_id=n, amount=n * 2)

    @orders.producer
    async def many(n: int) -> list[Order]:
        return [Order(order_id=i, amount=i) for i in range(n)]

    async with system:
        assert await new_order(4) == Order(order_id=4, amount=8)
        await many(5)
        lengths = [
            await system.client().execute("XLEN", orders.stream_key(p)) for p in range(2)
        ]
    assert sum(lengths) == 6


def test_a_producer_without_a_context_leaves_no_socket_open(redis_url: str) -> None:
    """``stream.send`` outside ``async with system`` and outside a worker uses a client of the
    trio run; its sockets are closed when the run ends, not left to the garbage collector."""
    import gc
    import warnings

    system = System("feat", redis_url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream("orders", record=Order)

    async def produce() -> None:
        await orders.send(Order(order_id=1, amount=1))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        trio.run(produce)
        gc.collect()
    assert [str(w.message) for w in caught if "unclosed" in str(w.message)] == []
