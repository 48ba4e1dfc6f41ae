"""Handler signatures are checked where the actor is declared, with a precise message."""

from __future__ import annotations

import pytest

from actorstream import ConfigError, Record, System


class Order(Record):
    order_id: int


class Refund(Record):
    refund_id: int


def declare() -> tuple[System, object]:
    system = System("sig", "redis://127.0.0.1:1/0")
    return system, system.stream("orders", record=Order, partitions=2, key="order_id")


def test_no_parameter_is_refused() -> None:
    system, orders = declare()
    with pytest.raises(ConfigError, match=r"actor 'bill': the handler bill\(\) takes no "
                       r"positional parameter, but it is called with one event"):
        @system.actor(orders)  # type: ignore[arg-type]
        async def bill() -> None: ...


def test_a_second_required_parameter_is_refused() -> None:
    system, orders = declare()
    with pytest.raises(ConfigError, match=r"also requires 'tax', but it is called with one "
                       r"event only"):
        @system.actor(orders)  # type: ignore[arg-type]
        async def bill(order: Order, tax: int) -> None: ...


def test_a_sync_handler_is_refused() -> None:
    system, orders = declare()
    with pytest.raises(ConfigError, match="must be an `async def` function"):
        @system.actor(orders)  # type: ignore[arg-type]
        def bill(order: Order) -> None: ...


def test_another_record_type_is_refused() -> None:
    system, orders = declare()
    with pytest.raises(ConfigError, match=r"parameter 'refund' is annotated with Refund, but "
                       r"stream 'orders' carries Order"):
        @system.actor(orders)  # type: ignore[arg-type]
        async def bill(refund: Refund) -> None: ...
    with pytest.raises(ConfigError, match="annotated with Refund"):
        @system.actor(orders, batch=True, name="many")  # type: ignore[arg-type]
        async def many(refunds: list[Refund]) -> None: ...


def test_what_fits_is_accepted() -> None:
    system, orders = declare()

    @system.actor(orders)  # type: ignore[arg-type]
    async def bill(order: Order, tax: int = 0, *, note: str = "") -> None: ...

    @system.actor(orders, batch=True, name="many")  # type: ignore[arg-type]
    async def many(orders: list[Order]) -> None: ...

    @system.actor(orders, name="loose")  # type: ignore[arg-type]
    async def loose(event, *rest, **kw) -> None: ...  # type: ignore[no-untyped-def]

    assert set(system.actors) == {"bill", "many", "loose"}
