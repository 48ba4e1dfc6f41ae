"""Pure lease timing: when to renew, when to stop trusting a lease, how long re-owning takes.

Every time here is a float from the worker's *local monotonic* clock (``trio.current_time()``).
Redis keeps its own clock for the lease's PX expiry. The two never need to agree on an absolute
value, only on the rate: a lease is trusted locally from the moment its acquire/renew request was
*sent* (taken before sending, so before Redis started its PX countdown), and only for
``ttl - self_fence_margin`` seconds. Redis therefore always expires the lease strictly after the
worker has stopped acting on it, even if the worker was paused (SIGSTOP, GC, a hung handler) for
any length of time: on waking, ``must_self_fence`` is true before any side effect is attempted.
The margin absorbs clock-rate drift and scheduling jitter between that check and the write.
"""

from __future__ import annotations

import math

import attrs
from attrs import frozen

from .errors import ConfigError

__all__ = ["Lease", "LeaseTiming"]


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"LeaseTiming.{attribute.name} must be a number of seconds, got {value!r}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"LeaseTiming.{attribute.name} must be a positive, finite number of seconds, "
            f"got {value!r}"
        )


@frozen
class LeaseTiming:
    """Timings of partition leases and membership, validated together at construction.

    ``ttl``: lease lifetime in Redis after each acquire/renew.
    ``renew_interval``: how often a held lease is renewed; at most ``ttl/3`` so that a lease
    survives two missed renewals (a slow Redis, a GC pause) before anything lapses.
    ``heartbeat_interval`` / ``member_timeout``: membership heartbeats and how long a silent
    worker stays a member; the interval is at most a third of the timeout for the same reason.
    ``self_fence_margin``: a worker stops trusting a lease this long before Redis could expire it.
    """

    ttl: float = attrs.field(default=6.0, validator=_positive)
    renew_interval: float = attrs.field(default=2.0, validator=_positive)
    heartbeat_interval: float = attrs.field(default=1.0, validator=_positive)
    member_timeout: float = attrs.field(default=6.0, validator=_positive)
    self_fence_margin: float = attrs.field(default=1.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.renew_interval * 3 > self.ttl:
            raise ConfigError(
                f"LeaseTiming.renew_interval ({self.renew_interval:g}s) must be at most "
                f"ttl/3 ({self.ttl / 3:g}s, ttl={self.ttl:g}s) so a lease survives two "
                "missed renewals"
            )
        if self.self_fence_margin >= self.ttl - self.renew_interval:
            raise ConfigError(
                f"LeaseTiming.self_fence_margin ({self.self_fence_margin:g}s) must be less "
                f"than ttl - renew_interval ({self.ttl - self.renew_interval:g}s), otherwise "
                "a worker would self-fence before its next renewal is even due"
            )
        if self.heartbeat_interval * 3 > self.member_timeout:
            raise ConfigError(
                f"LeaseTiming.heartbeat_interval ({self.heartbeat_interval:g}s) must be at "
                f"most member_timeout/3 ({self.member_timeout / 3:g}s, "
                f"member_timeout={self.member_timeout:g}s) so a member survives two missed "
                "heartbeats"
            )

    @property
    def trusted_for(self) -> float:
        """How long after sending an acquire/renew the worker may act on the lease."""
        return self.ttl - self.self_fence_margin

    def t_own(self, max_backoff: float = 0.0) -> float:
        """Upper bound on the time until a dead (kill -9) worker's partitions are owned again.

        T_own = max(ttl, member_timeout) + renew_interval + max_backoff:

        * its leases lapse in Redis at most ``ttl`` after its last renewal, and it drops out of
          the membership at most ``member_timeout`` after its last heartbeat (until then the
          sticky assignment may still name it, so nobody else takes its partitions);
        * a surviving coordinator steps at least every ``renew_interval`` (it must, to renew
          its own leases), so it notices within one interval;
        * ``max_backoff`` covers a coordinator that is itself reconnecting to Redis.

        With the defaults and no backoff: max(6, 6) + 2 = 8 seconds.
        """
        if not math.isfinite(max_backoff) or max_backoff < 0:
            raise ConfigError(f"max_backoff must be a finite number >= 0, got {max_backoff!r}")
        return max(self.ttl, self.member_timeout) + self.renew_interval + max_backoff


@frozen
class Lease:
    """What one worker knows about one lease it holds: its fencing epoch and its timing.

    ``acquired_at`` is the local monotonic time taken *before* sending the acquire request;
    ``confirmed_at`` is the send time of the latest acquire/renew that Redis confirmed. Both
    are conservative: Redis started its PX countdown no earlier than that.
    """

    epoch: int
    acquired_at: float
    timing: LeaseTiming = LeaseTiming()
    confirmed_at: float = attrs.field(
        default=attrs.Factory(lambda self: self.acquired_at, takes_self=True)
    )

    def renewed(self, sent_at: float) -> Lease:
        """The lease after Redis confirmed a renewal that was sent at local time ``sent_at``.

        Confirmations may arrive out of order; the latest send time wins.
        """
        return attrs.evolve(self, confirmed_at=max(self.confirmed_at, sent_at))

    @property
    def self_fence_deadline(self) -> float:
        """Local time from which this worker must not act on the lease any more."""
        return self.confirmed_at + self.timing.ttl - self.timing.self_fence_margin

    @property
    def renew_due_at(self) -> float:
        return self.confirmed_at + self.timing.renew_interval

    def must_self_fence(self, now: float) -> bool:
        """True when the lease may have lapsed in Redis (or is about to): stop at once."""
        return now >= self.self_fence_deadline

    def renew_due(self, now: float) -> bool:
        return now >= self.renew_due_at

    def remaining(self, now: float) -> float:
        """Seconds of trust left (negative once fenced); for statistics and `top`."""
        return self.self_fence_deadline - now
