"""What a worker logs of a Redis outage (pure): one line per worker, not one per task per retry.

When Redis goes away, every task of a worker notices: the coordinator, the leader lease, and each
partition actor, each retrying with its own backoff. Logging each of those is a wall of lines
that hides the one fact (Redis is unavailable). So the first task to notice logs the outage;
the others, and every retry, log quietly until Redis answers the coordinator again. Consequences
of the outage (leases that lapsed and self-fenced, epochs that went back because Redis came
back without its data) are likewise reported once per outage, not once per partition.
"""

from __future__ import annotations

__all__ = ["OutageLog"]


class OutageLog:
    """The outage state of one worker; each method says whether its line is due."""

    def __init__(self) -> None:
        #: When the current outage was first noticed; None while Redis answers.
        self.since: float | None = None
        #: When the last outage began (kept after it ended: its consequences come later).
        self.last_began: float | None = None
        self._data_loss_at: float | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def on_failure(self, now: float) -> bool:
        """A task found Redis unavailable; True if this begins an outage (log it)."""
        if self.since is not None:
            return False
        self.since = self.last_began = now
        return True

    def on_answer(self, now: float) -> float | None:
        """Redis answered; the outage's length if this ends one (log it), else None."""
        if self.since is None:
            return None
        length, self.since = now - self.since, None
        return length

    def on_data_loss(self, now: float, quiet: float = 60.0) -> bool:
        """Redis came back without our data; True for the first notice since the last outage
        began, or in ``quiet`` seconds: later ones are the same loss, seen by more parts."""
        if self._data_loss_at is not None and now - self._data_loss_at < quiet and (
            self.last_began is None or self.last_began < self._data_loss_at
        ):
            return False
        self._data_loss_at = now
        return True

    def explains(self, now: float, within: float) -> bool:
        """True while an outage lasts or ``within`` seconds after it began: a lease that could
        not be confirmed then lapsed because of it, and says nothing new."""
        return self.since is not None or (
            self.last_began is not None and now - self.last_began <= within
        )
