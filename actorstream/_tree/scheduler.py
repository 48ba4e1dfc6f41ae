"""Background tasks, timers and cron, supervised like actors; leader-only work; retention.

- ``@system.task``: runs for the life of the worker (restarted with backoff if it crashes).
- ``@system.timer(every=5.0)``: every 5 s from worker start; a slow run is never overlapped by
  the next one unless ``overlap=True`` (missed ticks are skipped, not queued).
- ``@system.cron("*/5 * * * *", tz="Europe/Rome")``: at cron times (cronsim), same overlap rule.
- ``leader_only=True``: runs only on the worker holding the leader lease (fenced like partition
  leases: acquire increments an epoch, renew is compare-and-set, the holder self-fences on its
  monotonic clock); when leadership is lost, the running task is cancelled.

The loops (``timer_loop``, ``cron_loop``) take their clocks as arguments, so tests run them on
``trio.testing.MockClock`` without Redis.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import trio
from attrs import frozen
from cronsim import CronSim, CronSimError
from trio_util import AsyncBool

from .._core import keys as _keys
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.errors import ConfigError
from .._core.leasetiming import Lease
from .._core.policy import RestartPolicy
from .._streams import Stream
from .._transport import Client
from . import scripts as _scripts
from .context import WorkerContext
from .supervisor import ChildContext, ChildFn, Restart, Strategy, Supervisor

log = logging.getLogger("actorstream.scheduler")

TaskFn = Callable[[], Awaitable[Any]]


def time_zone(tz: str | tzinfo) -> tzinfo:
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {tz!r} (use an IANA name like 'Europe/Rome')"
        ) from None


@frozen
class TaskSpec:
    """A declared background task, timer or cron job."""

    name: str
    fn: TaskFn
    kind: str  # "task" | "timer" | "cron"
    every: float | None = None
    cron: str | None = None
    tz: tzinfo = attrs.field(factory=lambda: ZoneInfo("UTC"))
    leader_only: bool = False
    overlap: bool = False

    def __attrs_post_init__(self) -> None:
        _keys.check_name("task", self.name)
        if self.kind == "timer" and (self.every is None or not self.every > 0):
            raise ConfigError(
                f"timer {self.name!r}: every must be > 0 seconds, got {self.every!r}"
            )
        if self.kind == "cron":
            try:
                CronSim(self.cron or "", datetime.now(self.tz))
            except (CronSimError, ValueError) as exc:
                raise ConfigError(
                    f"cron {self.name!r}: bad expression {self.cron!r}: {exc}"
                ) from None


async def _run_once(fn: TaskFn, name: str, overlap: bool, nursery: trio.Nursery | None) -> None:
    if overlap and nursery is not None:
        nursery.start_soon(fn, name=name)
    else:
        await fn()


async def timer_loop(
    fn: TaskFn, every: float, *, overlap: bool = False, name: str = "timer"
) -> None:
    """Call ``fn`` every ``every`` seconds on trio's clock; skip ticks missed by a slow run."""
    async with trio.open_nursery() as nursery:
        next_at = trio.current_time() + every
        while True:
            await trio.sleep_until(next_at)
            await _run_once(fn, name, overlap, nursery)
            now = trio.current_time()
            next_at += every
            if next_at <= now:  # a slow run: skip the missed ticks rather than bunch them
                next_at += math.ceil((now - next_at) / every) * every
                if next_at <= now:
                    next_at += every


def next_cron_time(expr: str, after: datetime) -> datetime:
    return next(iter(CronSim(expr, after)))


async def cron_loop(
    fn: TaskFn,
    expr: str,
    *,
    tz: tzinfo,
    wall_clock: Callable[[tzinfo], datetime] | None = None,
    overlap: bool = False,
    name: str = "cron",
) -> None:
    """Call ``fn`` at the cron times of ``expr`` in ``tz``.

    Waiting uses trio's clock; the next time is recomputed from the wall clock after every run,
    so a clock step or DST change moves the schedule, and a slow run skips what it missed.
    """
    clock = wall_clock or (lambda zone: datetime.now(zone))
    async with trio.open_nursery() as nursery:
        while True:
            now = clock(tz)
            due = next_cron_time(expr, now)
            # Subtract in UTC: same-zone aware datetimes subtract as wall times (wrong over DST).
            delay = (due.astimezone(UTC) - now.astimezone(UTC)) / timedelta(seconds=1)
            await trio.sleep(max(0.0, delay))
            await _run_once(fn, name, overlap, nursery)


class Leadership:
    """The leader lease of a system; ``is_leader`` is an AsyncBool others can wait on.

    Fenced like partition leases (acquire increments an epoch, renew is compare-and-set), and
    trusted through the same ``Lease``: only until ``Lease.must_self_fence`` on our own clock.
    """

    def __init__(self, worker: WorkerContext) -> None:
        self.worker = worker
        self.is_leader = AsyncBool(False)
        self.lease: Lease | None = None

    @property
    def epoch(self) -> int:
        return self.lease.epoch if self.lease is not None else 0

    async def run(self) -> None:
        worker = self.worker
        client = worker.client
        timing = worker.settings.lease_timing
        keys = [_keys.leader_lease_key(worker.app), _keys.leader_epoch_key(worker.app)]
        ttl_ms = int(timing.ttl * 1000)
        try:
            while True:
                sent_at = trio.current_time()
                try:
                    lease = self.lease
                    if lease is not None and self.is_leader.value:
                        ok = await client.evalsha(
                            _scripts.RENEW, keys, [worker.worker_id, lease.epoch, ttl_ms]
                        )
                        if ok == 1:
                            self.lease = lease.renewed(sent_at)
                        else:
                            self._lose("leader lease taken over")
                    else:
                        epoch, _holder = await client.evalsha(
                            _scripts.ACQUIRE, keys, [worker.worker_id, ttl_ms]
                        )
                        if int(epoch) > 0:
                            self.lease = Lease(epoch=int(epoch), acquired_at=sent_at,
                                               timing=timing)
                            self.is_leader.value = True
                            worker.report(
                                "leader", f"{worker.worker_id} is the leader (epoch {epoch})"
                            )
                except TRANSIENT_REDIS_ERRORS as exc:
                    worker.redis.unavailable("leader lease", describe_error(exc))
                lease = self.lease
                if lease is not None and lease.must_self_fence(trio.current_time()):
                    self._lose("leader lease could not be renewed in time")
                await trio.sleep(timing.renew_interval)
        finally:
            if self.is_leader.value:
                self.is_leader.value = False
                epoch, self.lease = self.epoch, None
                with trio.move_on_after(2.0) as scope:
                    scope.shield = True
                    with contextlib.suppress(*TRANSIENT_REDIS_ERRORS):
                        await client.evalsha(_scripts.RELEASE, keys, [worker.worker_id, epoch])

    def _lose(self, why: str) -> None:
        self.lease = None
        if self.is_leader.value:
            self.is_leader.value = False
            self.worker.report("leader", f"{self.worker.worker_id} lost leadership: {why}")


async def _while_leader(leadership: Leadership, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` whenever this worker is the leader; cancel it when leadership is lost."""
    while True:
        await leadership.is_leader.wait_value(True)
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await leadership.is_leader.wait_value(False)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await body()
            nursery.cancel_scope.cancel()


async def retention_loop(client: Client, streams: Sequence[Stream[Any]]) -> None:
    """Leader-only: trim streams with a retention policy, never below what a group needs."""
    streams = [s for s in streams if s.retention.enabled]
    if not streams:
        await trio.sleep_forever()
    interval = min(s.retention.interval for s in streams)
    while True:
        for stream in streams:
            policy = stream.retention
            minid = ""
            if policy.max_age is not None:
                server = await client.execute("TIME")  # the server's clock, not ours
                now_ms = int(server[0]) * 1000 + int(server[1]) // 1000
                minid = f"{max(0, now_ms - int(policy.max_age * 1000))}-0"
            for p in range(stream.partitions):
                try:
                    trimmed, _threshold = await client.evalsha(
                        _scripts.TRIM, [stream.stream_key(p)], [minid, policy.maxlen or 0]
                    )
                except TRANSIENT_REDIS_ERRORS as exc:
                    log.warning("retention of %s[%d] skipped: %s", stream.name, p, exc)
                    continue
                if trimmed:
                    log.debug("trimmed %d entries of %s[%d]", trimmed, stream.name, p)
        await trio.sleep(interval)


@frozen
class SchedulerContext:
    """The worker, the declared tasks, the streams (for retention) and the leader lease."""

    worker: WorkerContext
    tasks: tuple[TaskSpec, ...]
    streams: tuple[Stream[Any], ...]
    leadership: Leadership


def _task_child(spec: TaskSpec, leadership: Leadership) -> ChildFn:
    async def body() -> None:
        if spec.kind == "task":
            await spec.fn()
        elif spec.kind == "timer":
            assert spec.every is not None
            await timer_loop(spec.fn, spec.every, overlap=spec.overlap, name=spec.name)
        else:
            assert spec.cron is not None
            await cron_loop(spec.fn, spec.cron, tz=spec.tz, overlap=spec.overlap, name=spec.name)

    async def child(ctx: ChildContext) -> None:
        if spec.leader_only:
            await _while_leader(leadership, body)
        else:
            await body()

    return child


async def run_scheduler(context: SchedulerContext) -> None:
    """The scheduler branch of the tree: the leader lease, retention, the declared tasks.

    All are children of one supervisor; the leader lease is registered first, so it starts
    first (a crash there releases leadership in its ``finally`` and restarts it).
    """
    leadership = context.leadership
    client = context.worker.client
    streams = context.streams
    sup = Supervisor("scheduler", strategy=Strategy.ONE_FOR_ONE, policy=RestartPolicy())

    async def lease(ctx: ChildContext) -> None:
        await leadership.run()

    async def retention(ctx: ChildContext) -> None:
        await _while_leader(leadership, lambda: retention_loop(client, streams))

    sup.start_child("leadership", lease, restart=Restart.PERMANENT)
    for spec in context.tasks:
        sup.start_child(spec.name, _task_child(spec, leadership), restart=Restart.TRANSIENT)
    sup.start_child("retention", retention, restart=Restart.PERMANENT)
    await sup.run()
