"""Handler durations as fixed histogram buckets: what ``handler_duration_seconds`` exposes.

Pure and tiny, so the runtime can keep one per partition without importing prometheus_client:
``observe`` is a bisect and two additions. The runtime observes every event only when metrics
are enabled (exact counts, a Prometheus histogram must not be a sample); otherwise it keeps none.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

#: Upper bounds in seconds. Finer at the bottom than Prometheus' defaults: handlers here
#: commonly take microseconds to milliseconds.
BOUNDS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class Durations:
    """Counts per bucket (the last one is +Inf) and the sum of observed seconds."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*map(_le, BOUNDS), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    @classmethod
    def merged(cls, parts: Iterable[Durations]) -> Durations:
        out = cls()
        for part in parts:
            out.counts = [a + b for a, b in zip(out.counts, part.counts, strict=True)]
            out.sum += part.sum
        return out


def timed(
    handler: Callable[[Any], Awaitable[Any]],
    observe: Callable[[float], None],
    now: Callable[[], float],
) -> Callable[[Any], Awaitable[Any]]:
    """``handler`` observing the duration of every call, failed ones included."""

    async def call(event: Any) -> Any:
        started = now()
        try:
            return await handler(event)
        finally:
            observe(now() - started)

    return call


def _le(bound: float) -> str:
    return repr(float(bound))
