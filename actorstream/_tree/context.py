"""The worker context: what every branch of the tree shares, frozen, instead of the System.

Each branch gets this plus the few things it needs (its own small context or constructor
arguments); nothing in the tree imports the System or the root back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio
from attrs import frozen

from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.outage import OutageLog
from .._core.settings import Settings
from .._transport import Client

__all__ = ["RedisHealth", "Report", "WorkerContext"]

log = logging.getLogger("actorstream")

#: ``report(kind, message)``: record a notable event (crash, fence, dead letter) for `top`.
Report = Callable[[str, str], None]


class RedisHealth:
    """Logs a Redis outage once per worker, whichever of its tasks notices (see ``OutageLog``).

    The tasks still count and show their own errors (statistics, `top`); only the log is shared.
    """

    def __init__(self, lease_ttl: float = 6.0, client: Client | None = None) -> None:
        self.outage = OutageLog()
        self.client = client
        #: A lease lapses at most a TTL after the outage began; twice that allows for the
        #: partition noticing late.
        self.window = 2 * lease_ttl

    def unavailable(self, who: str, error: str) -> None:
        if self.outage.on_failure(trio.current_time()):
            log.warning(
                "Redis unavailable (%s: %s); every part of this worker retries until it answers",
                who, error,
            )  # fmt: skip
        else:
            log.debug("%s: Redis still unavailable: %s", who, error)

    def handler_failed(self, who: str, exc: Exception) -> bool:
        """A handler's call to this worker's own Redis failed because Redis is unavailable
        (the worker's client lost a connection just now, or an outage is known): True, and the
        outage is noted (its one line, if it is the first to tell). False for anything else,
        such as a failing database of the handler's own, which is logged as usual."""
        if not isinstance(exc, TRANSIENT_REDIS_ERRORS) or self.client is None:
            return False
        now = trio.current_time()
        if not self.outage.active and now - self.client.last_lost_at > 1.0:
            return False
        self.unavailable(f"{who} handler", describe_error(exc))
        return True

    def answered(self) -> None:
        length = self.outage.on_answer(trio.current_time())
        if length is not None:
            log.info("Redis available again after %.1fs", length)

    def data_lost(self, what: str) -> None:
        """Redis came back without our data (``what`` names what showed it)."""
        if self.outage.on_data_loss(trio.current_time()):
            log.error(
                "Redis lost data (a failover, or a restart without persistence): %s", what
            )
        else:
            log.debug("Redis lost data, seen again: %s", what)

    def explains(self) -> bool:
        """Whether a Redis outage of this worker explains what just went wrong (a lease that
        lapsed, a partition backing off): then that is logged quietly (info)."""
        return self.outage.explains(trio.current_time(), self.window)

    def fenced(self, logger: logging.Logger, who: str, exc: Exception) -> None:
        """A partition's fence, logged quietly when a Redis outage explains its lapsed lease."""
        level = logging.INFO if self.explains() else logging.WARNING
        logger.log(level, "%s fenced: %s", who, exc)


@frozen
class WorkerContext:
    """Identity, client, settings and the ``report`` callable of one running worker."""

    app: str
    worker_id: str
    host: str
    pid: int
    started_wall_ms: int
    client: Client
    settings: Settings
    report: Report
    #: Set when a graceful stop begins (the coordinator drains and leaves on it).
    stopping: trio.Event
    #: The worker's Redis outages, logged once however many tasks notice them.
    redis: RedisHealth = attrs.field(factory=RedisHealth)

    async def wait_stopping(self) -> None:
        await self.stopping.wait()

    @property
    def is_stopping(self) -> bool:
        return self.stopping.is_set()
