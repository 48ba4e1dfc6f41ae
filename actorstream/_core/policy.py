"""Pure restart policy: restart intensity (MaxR in MaxT) and backoff with jitter.

No trio and no I/O: every function takes the time as a float, so the supervisor decides with
``trio.current_time()`` and the tests decide with plain numbers.
"""

from __future__ import annotations

import math
import random
from collections import deque

from attrs import field, frozen

from .errors import ConfigError
from .validators import number

__all__ = ["Backoff", "RestartIntensity", "RestartPolicy"]

def _finite(v: float) -> bool:
    return math.isfinite(v)


@frozen
class RestartPolicy:
    """How a supervisor restarts its children and when it gives up (Erlang's MaxR in MaxT).

    ``reset_after``: a child that ran at least this long before crashing starts its backoff
    again from ``backoff_initial`` (``math.inf`` never resets).
    """

    max_restarts: int = field(
        default=10, validator=number("an int >= 0", lambda v: v >= 0, integer=True)
    )
    within: float = field(
        default=60.0, validator=number("a finite number > 0", lambda v: _finite(v) and v > 0)
    )
    backoff_initial: float = field(
        default=0.05, validator=number("a finite number >= 0", lambda v: _finite(v) and v >= 0)
    )
    backoff_max: float = field(
        default=5.0, validator=number("a finite number >= 0", lambda v: _finite(v) and v >= 0)
    )
    backoff_multiplier: float = field(
        default=2.0, validator=number("a finite number >= 1", lambda v: _finite(v) and v >= 1)
    )
    jitter: float = field(default=0.25, validator=number("in [0, 1]", lambda v: 0 <= v <= 1))
    reset_after: float = field(default=30.0, validator=number("a number >= 0", lambda v: v >= 0))

    def __attrs_post_init__(self) -> None:
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(
                f"RestartPolicy.backoff_max ({self.backoff_max!r}) must be >= "
                f"backoff_initial ({self.backoff_initial!r})"
            )


class RestartIntensity:
    """Sliding-window restart accounting, like an Erlang supervisor's intensity/period.

    A restart at ``t`` stays counted while ``now - t < within``. ``record_restart`` refuses
    (returns False, records nothing) the restart that would make more than ``max_restarts``
    in the window: the caller escalates instead.
    """

    def __init__(self, max_restarts: int, within: float) -> None:
        self.max_restarts = max_restarts
        self.within = within
        self._times: deque[float] = deque()

    @classmethod
    def from_policy(cls, policy: RestartPolicy) -> RestartIntensity:
        return cls(policy.max_restarts, policy.within)

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.within:
            self._times.popleft()

    def restarts_in_window(self, now: float) -> int:
        self._prune(now)
        return len(self._times)

    def record_restart(self, now: float) -> bool:
        self._prune(now)
        if len(self._times) >= self.max_restarts:
            return False
        self._times.append(now)
        return True


class Backoff:
    """Exponential backoff with jitter for one child.

    Call ``on_start(now)`` whenever the child starts and ``next_delay(now)`` when it crashed;
    a child that ran for ``reset_after`` or longer starts again from ``backoff_initial``.
    """

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._next_base = policy.backoff_initial
        self._current = 0.0
        self._started_at: float | None = None

    @property
    def current(self) -> float:
        """The delay chosen last (0.0 before any crash or after a reset)."""
        return self._current

    def on_start(self, now: float) -> None:
        self._started_at = now

    def reset(self) -> None:
        self._next_base = self._policy.backoff_initial
        self._current = 0.0

    def next_delay(self, now: float, rng: random.Random | None = None) -> float:
        """The delay before restarting after a crash at ``now``; advances the backoff."""
        policy = self._policy
        if self._started_at is not None and now - self._started_at >= policy.reset_after:
            self.reset()
        base = self._next_base
        self._next_base = min(base * policy.backoff_multiplier, policy.backoff_max)
        delay = base
        if policy.jitter > 0 and base > 0:
            uniform = rng.uniform if rng is not None else random.uniform
            delay = base * (1.0 + policy.jitter * uniform(-1.0, 1.0))
        self._current = max(0.0, delay)
        return self._current
