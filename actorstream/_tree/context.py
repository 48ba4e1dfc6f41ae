"""The worker context: what every branch of the tree shares, frozen, instead of the System.

Each branch gets this plus the few things it needs (its own small context or constructor
arguments); nothing in the tree imports the System or the root back.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from attrs import frozen

from .._core.settings import Settings
from .._transport import Client

__all__ = ["Report", "WorkerContext"]

#: ``report(kind, message)``: record a notable event (crash, fence, dead letter) for `top`.
Report = Callable[[str, str], None]


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

    async def wait_stopping(self) -> None:
        await self.stopping.wait()

    @property
    def is_stopping(self) -> bool:
        return self.stopping.is_set()
