"""The worker app of the containment chaos tests, run with ``actorstream worker``.

Environment:

- ``APP_NAME``, ``PARTITIONS`` (16), ``BATCH_SIZE`` (100): the system and its stream;
- events with ``poison=True`` make the handler raise ``PoisonError`` (a ``ValueError``);
- ``CLASSIFY=1``: the actor names ``PoisonError`` in ``poison_errors`` (dead-lettered at once);
- ``OUTAGE_AT``/``OUTAGE_FOR``: unix time and seconds during which every handling raises
  ``ConnectionError``, like a database that is down;
- ``HANDLE_SLEEP``: seconds each handling sleeps first (a slow handler, for drains);
- ``RECORD`` (1): RPUSH each handled event to ``<app>:handled`` as ``key:seq:pid:partition``
  before returning (the ground truth of handling: duplicates are visible); every failed call is
  counted in the hash ``<app>:failures`` (field: seq), so a hot loop would show.
"""

from __future__ import annotations

import os
import time
from typing import Any

import trio
from _harness import app_system, env_float, env_int  # the set-up every chaos app shares

from actorstream import Record

system = app_system("contain")
APP = system.name
PARTITIONS = env_int("PARTITIONS", 16)
OUTAGE_AT = env_float("OUTAGE_AT", 0)
OUTAGE_END = OUTAGE_AT + env_float("OUTAGE_FOR", 0)
SLEEP = env_float("HANDLE_SLEEP", 0)
RECORD = os.environ.get("RECORD", "1") == "1"
PID = os.getpid()


class Event(Record):
    key: int
    seq: int
    poison: bool = False


class PoisonError(ValueError):
    """What the handler raises for a poison event."""


events = system.stream("orders", record=Event, partitions=PARTITIONS, key="key")

settings: dict[str, Any] = {"batch_size": env_int("BATCH_SIZE", 100)}
if os.environ.get("CLASSIFY") == "1":
    settings["poison_errors"] = (PoisonError,)


@system.actor(events, **settings)
async def handle(event: Event) -> None:
    client = system.client()
    if SLEEP:
        await trio.sleep(SLEEP)
    if OUTAGE_AT <= time.time() < OUTAGE_END:
        if RECORD:
            await client.execute("HINCRBY", f"{APP}:failures", event.seq, 1)
        raise ConnectionError("database unavailable (simulated outage)")
    if event.poison:
        if RECORD:
            await client.execute("HINCRBY", f"{APP}:failures", event.seq, 1)
        raise PoisonError(f"event {event.seq} of key {event.key} is poison")
    if RECORD:
        p = events.partition_of(event)
        await client.execute("RPUSH", f"{APP}:handled", f"{event.key}:{event.seq}:{PID}:{p}")
