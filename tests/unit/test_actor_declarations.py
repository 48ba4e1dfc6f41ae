"""What an actor declaration refuses (no Redis): options its form could not apply."""

from __future__ import annotations

from typing import Any

import pytest

from actorstream import ConfigError, EventInfo, Next, System


def system_and_stream() -> tuple[System, Any]:
    system = System("unit", "redis://127.0.0.1:1/0")
    return system, system.stream("orders", partitions=2, key="k")


async def handle(events: Any) -> None:
    async for _event in events:
        pass


async def passthrough(event: object, info: EventInfo, call_next: Next) -> None:
    await call_next(event)


async def skip(event: object, exc: Exception, info: EventInfo) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"middleware": [passthrough]}, "middleware"),
        ({"on_error": skip}, "on_error"),
        ({"timeout": 5.0}, "timeout"),
        ({"retries": 2}, "retries"),
        ({"timeout": 1.0, "retries": 1}, "timeout, retries"),
    ],
)
def test_iterator_form_refuses_per_event_options(options: dict[str, Any], named: str) -> None:
    system, orders = system_and_stream()
    with pytest.raises(ConfigError, match=rf"actor 'readings': {named} cannot apply to the "
                                          "iterator form"):
        system.actor(orders, name="readings", iterator=True, **options)(handle)
    assert "readings" not in system.actors


def test_event_form_takes_them_all() -> None:
    system, orders = system_and_stream()
    system.middleware(passthrough)

    @system.actor(orders, middleware=[passthrough], on_error=skip, timeout=5.0, retries=2)
    async def bill(event: Any) -> None: ...

    assert system.actors["bill"].settings.retries == 2
