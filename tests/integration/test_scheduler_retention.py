"""Leader-only tasks and safe retention against real Redis."""

from __future__ import annotations

from typing import Any

import trio

from actorstream import LeaseTiming, Record, Retention, System, running
from actorstream._transport import Client

FAST = LeaseTiming(
    ttl=1.5, renew_interval=0.5, heartbeat_interval=0.25, member_timeout=1.5,
    self_fence_margin=0.25,
)


class Order(Record):
    order_id: int
    amount: int


async def test_leader_only_timer_runs_on_one_worker_and_fails_over(redis_url: str) -> None:
    ticks: list[str] = []

    def make(tag: str) -> System:
        system = System("lead", redis_url, install_signal_handlers=False, lease_timing=FAST)

        @system.timer(every=0.05, leader_only=True)
        async def tick() -> None:
            ticks.append(tag)

        @system.timer(every=0.05)
        async def everywhere() -> None:
            ticks.append(tag + "-all")

        return system

    a, b = make("a"), make("b")
    async with running(a) as ra:
        async with running(b) as rb:
            await trio.sleep(1.0)
            leaders = {t for t in ticks if not t.endswith("-all")}
            assert len(leaders) == 1, ticks
            assert {"a-all", "b-all"} <= set(ticks)
            first = leaders.pop()
            assert (ra if first == "a" else rb).leadership.is_leader.value
        if first == "b":
            # b left gracefully (released the lease): a takes over within a renew interval
            ticks.clear()
            await trio.sleep(1.5)
            assert "a" in ticks
    if first == "a":
        assert "a" in ticks


async def test_retention_never_trims_unhandled_entries(redis_url: str) -> None:
    system = System("ret", redis_url, install_signal_handlers=False, lease_timing=FAST)
    orders = system.stream(
        "orders", record=Order, retention=Retention(maxlen=10, interval=0.1)
    )
    handled: list[int] = []
    gate = trio.Event()

    @system.actor(orders, batch_size=5)
    async def bill(order: Order) -> None:
        if order.amount == 50:
            await gate.wait()
        handled.append(order.amount)

    key = orders.stream_key(0)
    async with Client.from_url(redis_url) as client:
        async with system:
            await orders.send_many([Order(order_id=1, amount=i) for i in range(100)])
        async with running(system):
            with trio.fail_after(10):
                while len(handled) < 50:
                    await trio.sleep(0.01)
            await trio.sleep(0.6)  # several retention rounds while event 50 is in the handler
            first = await client.execute("XRANGE", key, "-", "+", "COUNT", 1)
            length = await client.execute("XLEN", key)
            # Handled-and-acked entries went; the unhandled 50..99 are all still there.
            first_amount = _amount(first[0][1])
            assert first_amount <= 50
            assert length >= 50
            assert length < 100
            gate.set()
            with trio.fail_after(10):
                while len(handled) < 100:
                    await trio.sleep(0.01)
            await trio.sleep(0.6)
            length_after = await client.execute("XLEN", key)
    assert handled == list(range(100))
    assert length_after < 50  # trimmed towards maxlen once everything was acked


def _amount(flat: list[Any]) -> int:
    import json

    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return int(json.loads(fields[b"d"])["amount"])
