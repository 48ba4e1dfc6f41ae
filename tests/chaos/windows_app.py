"""The worker app of the windows chaos tests, run with ``actorstream worker``.

Revenue per customer per minute (``Tumbling(60, grace=5)``) and clicks per user session
(``Session(30, grace=10)``), both ``processing="exactly_once"``: each closed window is sent to an
output stream by ``on_close``, each late event to a ``late`` stream by ``on_late``, so a checker
can compare what was produced with what was emitted. Environment: ``APP_NAME``, ``PARTITIONS``,
``PROCESSING`` (``exactly_once``; ``at_least_once`` shows what the checker catches without it).
"""

from __future__ import annotations

import os

from _harness import app_system, env_int  # the set-up every chaos app shares

from actorstream import Record, Session, Tumbling, Window

system = app_system("windows")
PARTITIONS = env_int("PARTITIONS", 8)


class Sale(Record):
    customer: int
    seq: int
    amount: int
    ts: float


class Click(Record):
    user: int
    seq: int
    ts: float


class Closed(Record):
    key: int
    start: float
    end: float
    value: int


class Late(Record):
    key: int
    ts: float


sales = system.stream("sales", record=Sale, partitions=PARTITIONS, key="customer", time="ts")
clicks = system.stream("clicks", record=Click, partitions=PARTITIONS, key="user", time="ts")
revenue = system.stream("revenue", record=Closed, partitions=4, key="key")
sessions_out = system.stream("sessions", record=Closed, partitions=4, key="key")
late = system.stream("late", record=Late, partitions=1, key="key")

per_minute = system.table("per_minute", value=int, default=0, window=Tumbling(60, grace=5))
per_session = system.table("per_session", value=int, default=0, window=Session(30, grace=10))


PROCESSING = os.environ.get("PROCESSING", "exactly_once")


@system.actor(sales, tables=[per_minute], processing=PROCESSING)
async def bill(sale: Sale) -> None:
    per_minute[sale.customer] += sale.amount


@per_minute.on_close
async def emit_minute(customer: str, window: Window, amount: int) -> None:
    await revenue.send(Closed(int(customer), window.start, window.end, amount))


@per_minute.on_late
async def late_sale(customer: str, ts: float, windows: tuple[Window, ...]) -> None:
    await late.send(Late(int(customer), ts))


@system.actor(clicks, tables=[per_session], processing="exactly_once")
async def visit(click: Click) -> None:
    per_session[click.user] += 1


@per_session.on_close
async def emit_session(user: str, window: Window, count: int) -> None:
    await sessions_out.send(Closed(int(user), window.start, window.end, count))


@per_session.on_late
async def late_click(user: str, ts: float, windows: tuple[Window, ...]) -> None:
    await late.send(Late(-1 - int(user), ts))
