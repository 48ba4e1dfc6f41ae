"""Fence: one worker's view of one lease, the local deadline before which it may act; and
``Fenced``, Redis's verdict that the lease's epoch is no longer ours.

Pure: ``check(now)`` takes the time (the trio side passes ``trio.current_time()``), so the
self-fencing rule is tested with plain numbers. Mutable on purpose: the coordinator moves the
deadline on each confirmed renewal, and the partition actor holding the same object sees it.
"""

from __future__ import annotations

from attrs import frozen

from .errors import FencedError, SelfFenced

__all__ = ["Fence", "Fenced", "Notice"]

#: ``report(kind, message)`` items the carrier passes on to the worker's report.
Notice = tuple[str, str]


class Fence:
    """The epoch of a lease and the local monotonic deadline of our trust in it."""

    __slots__ = ("deadline", "epoch")

    def __init__(self, epoch: int, deadline: float) -> None:
        self.epoch = epoch
        self.deadline = deadline

    def check(self, now: float) -> None:
        """Raise ``SelfFenced`` once ``now`` reaches the deadline (the lease may have lapsed)."""
        if now >= self.deadline:
            raise SelfFenced(
                f"lease of epoch {self.epoch} could not be confirmed in time; stopping"
            )

    def revoke(self) -> None:
        """Stop trusting the lease at once (the next check raises)."""
        self.deadline = -float("inf")


@frozen
class Fenced:
    """Redis refused our epoch. ``current`` is the epoch Redis holds (None: it changed under a
    transaction, value unknown); below ours it is an epoch regression (Redis lost data)."""

    ours: int
    current: int | None
    label: str
    #: Set when the epoch matches but the lease is another worker's (or nobody's): Redis lost
    #: data and the epoch number came round again for a new owner.
    holder: str | None = None

    @property
    def regression(self) -> bool:
        return self.current is not None and self.current < self.ours

    def error(self) -> FencedError:
        if self.holder is not None:
            return FencedError(
                f"FENCED the lease of {self.label} at epoch {self.ours} is {self.holder} "
                "(Redis lost data and the epoch number came round again)"
            )
        if self.current is None:
            return FencedError(f"FENCED the epoch of {self.label} changed; {self.ours} is stale")
        return FencedError(f"FENCED epoch is {self.current}, {self.label} has {self.ours}")

    def notices(self) -> tuple[Notice, ...]:
        if not self.regression:
            return ()
        return (
            (
                "epoch-regression",
                f"{self.label}: epoch went back from {self.ours} to {self.current}: "
                "Redis lost data",
            ),
        )
