"""Fence: one worker's view of one lease, the local deadline before which it may act.

Pure: ``check(now)`` takes the time (the trio side passes ``trio.current_time()``), so the
self-fencing rule is tested with plain numbers. Mutable on purpose: the coordinator moves the
deadline on each confirmed renewal, and the partition actor holding the same object sees it.
"""

from __future__ import annotations

from .errors import SelfFenced

__all__ = ["Fence"]


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
