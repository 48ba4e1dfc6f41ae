"""A tour of the features: batch and iterator actors, middleware, error hooks, dict events,
timers, cron, leader-only tasks, retention and compression.

    export ACTORSTREAM_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/features.py          # a worker; it produces its own events with a timer
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actorstream import EventInfo, Events, Next, Outcome, Record, Retention, System

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("features")

system = System("features")


class Reading(Record):
    sensor: str
    value: float


readings = system.stream(
    "readings",
    record=Reading,
    partitions=4,
    key="sensor",
    compression="zlib",                                   # recorded per entry
    retention=Retention(max_age=3600, interval=30),       # trims only what every group acked
)
clicks = system.stream("clicks", partitions=2, key="user")  # plain dict events


@system.middleware
async def timing(event: Any, info: EventInfo, call_next: Next) -> None:
    started = trio.current_time()
    try:
        await call_next(event)
    finally:
        log.debug("%s[%d] took %.1f ms", info.actor, info.partition,
                  (trio.current_time() - started) * 1000)


async def route_failures(event: Any, exc: Exception, info: EventInfo) -> Outcome:
    log.warning("%s failed on %s: %s; dead-lettering it", info.actor, info.entry_id, exc)
    return Outcome.DEAD_LETTER


@system.actor(readings, batch=True, batch_size=200, batch_wait=0.5, on_error=route_failures)
async def store(batch: list[Reading]) -> None:
    log.info("storing %d readings", len(batch))


@system.actor(readings, iterator=True)
async def averages(events: Events) -> None:
    async for window in events.take(50, within=2.0):
        log.info("average of %d: %.2f", len(window), sum(r.value for r in window) / len(window))


@system.actor(clicks, retries=2, retry_backoff=0.1)
async def count_clicks(event: dict[str, bytes]) -> None:
    log.info("click by %s on %s", event["user"].decode(), event["page"].decode())


@system.timer(every=1.0)
async def produce() -> None:
    await readings.send_many([Reading(sensor=f"s{i}", value=i * 1.5) for i in range(20)])
    await clicks.send({"user": "ann", "page": "/home"})


@system.cron("*/5 * * * *", tz="Europe/Rome", leader_only=True)
async def report() -> None:
    log.info("five-minute report (runs on the leader only)")


if __name__ == "__main__":
    trio.run(system.start)
