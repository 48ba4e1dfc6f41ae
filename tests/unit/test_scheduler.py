"""Timers and cron on trio's MockClock (no Redis): cadence, no overlap, skipped ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing

from actorstream import ConfigError, System
from actorstream._tree.scheduler import cron_loop, next_cron_time, timer_loop


async def test_timer_fires_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []

    async def tick() -> None:
        times.append(trio.current_time())

    start = trio.current_time()
    with trio.move_on_after(10.5):
        await timer_loop(tick, 2.0)
    assert [round(t - start, 6) for t in times] == [2.0, 4.0, 6.0, 8.0, 10.0]


async def test_slow_timer_run_is_not_overlapped_and_missed_ticks_are_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    running = 0
    max_running = 0

    async def slow() -> None:
        nonlocal running, max_running
        starts.append(trio.current_time())
        running += 1
        max_running = max(max_running, running)
        await trio.sleep(3.5)
        running -= 1

    start = trio.current_time()
    with trio.move_on_after(20):
        await timer_loop(slow, 1.0)
    assert max_running == 1
    offsets = [round(t - start, 6) for t in starts]
    # runs at 1, then the next free tick after 4.5 (5), then after 8.5 (9), ...
    assert offsets[:4] == [1.0, 5.0, 9.0, 13.0]


async def test_overlapping_timer_when_asked(autojump_clock: trio.testing.MockClock) -> None:
    running = 0
    max_running = 0

    async def slow() -> None:
        nonlocal running, max_running
        running += 1
        max_running = max(max_running, running)
        await trio.sleep(3.5)
        running -= 1

    with trio.move_on_after(10):
        await timer_loop(slow, 1.0, overlap=True)
    assert max_running >= 3


async def test_cron_fires_at_cron_times_in_its_zone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    base = datetime(2026, 3, 29, 0, 58, 30, tzinfo=UTC)  # DST day in Europe/Rome
    t0 = trio.current_time()

    def wall(zone: tzinfo) -> datetime:
        return (base + timedelta(seconds=trio.current_time() - t0)).astimezone(zone)

    fired: list[datetime] = []

    async def job() -> None:
        fired.append(wall(UTC))

    with trio.move_on_after(16 * 60):
        await cron_loop(job, "*/5 * * * *", tz=ZoneInfo("Europe/Rome"), wall_clock=wall)
    assert [f.strftime("%H:%M") for f in fired] == ["01:00", "01:05", "01:10"]


def test_next_cron_time() -> None:
    after = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
    assert next_cron_time("*/15 * * * *", after) == datetime(2026, 1, 1, 12, 15, tzinfo=UTC)


def test_bad_task_declarations() -> None:
    system = System("sched", "redis://127.0.0.1:1/0")

    async def job() -> None:
        pass

    with pytest.raises(ConfigError, match="bad expression"):
        system.cron("61 * * * *")(job)
    with pytest.raises(ConfigError, match="unknown time zone"):
        system.cron("* * * * *", tz="Mars/Olympus")
    with pytest.raises(ConfigError, match="every must be > 0"):
        system.timer(every=0)(job)
    system.timer(every=1)(job)
    with pytest.raises(ConfigError, match="already declared"):
        system.timer(every=1)(job)
    with pytest.raises(ConfigError, match="async def"):
        system.task(lambda: None, name="sync")  # type: ignore[arg-type]
