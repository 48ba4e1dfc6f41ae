"""Punctuators as data: per-partition timers on stream time or the wall clock (pure).

A punctuator ticks at the multiples of ``every`` since the epoch on its clock: ``"stream"``
(the highest event time its partition has seen) or ``"wall"`` (the worker's wall clock). Its
progress is one number per partition, the *mark*: the last tick fired (or, before the first,
the tick at or before the first time seen). The mark is kept with the partition's state and
committed in the same transaction as what the tick did, so a partition that moves, or a worker
that dies, neither skips a tick nor repeats a committed one.

The rule, for a clock reading ``now`` (milliseconds) and a mark:

- no mark yet: the mark becomes ``floor(now)`` (the tick at or before ``now``); nothing fires,
  since no tick was crossed;
- ``floor(now) > mark``: one call, for the tick ``floor(now)``; the ticks between the mark and
  it (``missed``) are not called one by one: a clock that jumps (a burst of late-stamped
  events, a partition quiet for a day, a worker that was down) costs one call, which learns
  from ``Tick.previous`` what it covers;
- otherwise nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple

from attrs import field, frozen

from .errors import ConfigError

__all__ = ["CLOCKS", "Due", "PunctuatorSpec", "Tick", "due", "tick_at_or_before"]

#: The clocks a punctuator can follow.
CLOCKS = ("stream", "wall")


def tick_at_or_before(now_ms: int, every_ms: int) -> int:
    return now_ms // every_ms * every_ms


class Due(NamedTuple):
    """What one clock reading means for one punctuator: the mark to keep (None: unchanged)
    and the tick to fire (None: none)."""

    mark: int | None
    fire: int | None


_NOTHING = Due(None, None)


def due(mark: int | None, now_ms: int, every_ms: int) -> Due:
    """The rule of the module docstring."""
    if mark is not None and now_ms < mark + every_ms:
        return _NOTHING
    tick = tick_at_or_before(now_ms, every_ms)
    if mark is None:
        return Due(tick, None)
    return Due(tick, tick)


@frozen
class Tick:
    """What a punctuator is called with (times in epoch seconds).

    ``time``: this tick, a multiple of ``every``. ``previous``: the tick before it on this
    partition (fired, or where the partition's clock started); the call covers
    ``[previous, time)``. ``missed``: the ticks in between that were not called on their own.
    ``clock``: ``"stream"`` or ``"wall"``.
    """

    time: float
    previous: float
    partition: int
    clock: str
    every: float

    @property
    def missed(self) -> int:
        return max(0, round((self.time - self.previous) / self.every) - 1)


def _every(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else value


@frozen
class PunctuatorSpec:
    """A declared punctuator of one actor: ``fn(tick)`` every ``every`` seconds of ``clock``."""

    actor: str
    name: str
    fn: Callable[..., Any]
    every: float = field(converter=_every)
    clock: str = "stream"

    def __attrs_post_init__(self) -> None:
        where = f"actor {self.actor!r}: punctuator {self.name!r}"
        every = self.every
        if isinstance(every, bool) or not isinstance(every, int | float) or not math.isfinite(
            every
        ):
            raise ConfigError(
                f"{where}: every must be a finite number of seconds (or a timedelta), got "
                f"{every!r}"
            )
        if every <= 0:
            raise ConfigError(f"{where}: every must be > 0 seconds, got {every!r}")
        millis = every * 1000
        if abs(millis - round(millis)) > 1e-6:
            raise ConfigError(
                f"{where}: every must be a whole number of milliseconds, got {every!r}"
            )
        if self.clock not in CLOCKS:
            raise ConfigError(
                f"{where}: time must be 'stream' (event time: the highest seen by the "
                f"partition) or 'wall' (the wall clock), got {self.clock!r}"
            )

    @property
    def every_ms(self) -> int:
        return round(self.every * 1000)

    def tick(self, fire_ms: int, previous_ms: int, partition: int) -> Tick:
        return Tick(fire_ms / 1000, previous_ms / 1000, partition, self.clock, self.every)
