"""The worker app of the punctuator chaos test, run with ``actorstream worker``.

Sales summed per partition between stream-time ticks (every second of event time): each tick
sends the sum since the last one and starts afresh; and a wall-clock heartbeat per partition
(every 0.2 s) that sends the tick it covers. Both under ``PROCESSING`` (``exactly_once``, or
``at_least_once`` to show what the checker catches without it). Environment: ``APP_NAME``,
``PARTITIONS``, ``PROCESSING``.
"""

from __future__ import annotations

import os

from _harness import app_system, env_int  # the set-up every chaos app shares

from actorstream import Record, Tick

system = app_system("punctuate")
PARTITIONS = env_int("PARTITIONS", 8)
PROCESSING = os.environ.get("PROCESSING", "exactly_once")


class Sale(Record):
    customer: int
    seq: int
    amount: int
    ts: float


class Total(Record):
    partition: int
    tick: float
    previous: float
    amount: int


class Beat(Record):
    partition: int
    time: float
    previous: float


sales = system.stream("sales", record=Sale, partitions=PARTITIONS, key="customer", time="ts")
totals = system.stream("totals", record=Total, partitions=4, key="partition")
beats = system.stream("beats", record=Beat, partitions=4, key="partition")
acc = system.table("acc", value=int, default=0)


@system.actor(sales, tables=[acc], processing=PROCESSING)
async def tally(sale: Sale) -> None:
    acc[sale.customer] += sale.amount


@system.punctuate(tally, every=1.0, time="stream")
async def flush(tick: Tick) -> None:
    total = 0
    for key, value in acc.items():
        total += value
        del acc[key]
    await totals.send(Total(tick.partition, tick.time, tick.previous, total))


@system.punctuate(tally, every=0.2, time="wall")
async def heartbeat(tick: Tick) -> None:
    await beats.send(Beat(tick.partition, tick.time, tick.previous))
