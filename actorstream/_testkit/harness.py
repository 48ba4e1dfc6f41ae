"""``Harness``: run a System's actors in-process against a real Redis, for users' own tests.

"Given these events, my handlers produce these effects": the harness starts a ``redis-server``
on a free port (or uses ``redis_url=``), points the System at it and runs one real worker in the
same trio run (the same code as production: leases, fencing, dead letters, tables). Tests send
with the System's own streams and then ``await h.wait_idle()``.

Idle is decided from Redis's own state, never by counting handler calls: every consumer group
of every actor has no lag (nothing left to deliver) and no pending entry (nothing delivered and
not acknowledged; a poison event stays pending until its move to the dead letters, which acks
it). Read in one MULTI/EXEC on a single Redis, so an event a handler sends to another stream
cannot slip between two readings; on a Cluster, two idle readings in a row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

import attrs
import trio

from .._core import keys as _keys
from .._core.deadletter import DeadLetter
from .._core.leasetiming import LeaseTiming
from .._core.replies import pairs, text
from .._servers.server import RedisServer

if TYPE_CHECKING:
    from .._streams import Stream
    from .._system import System
    from .._tables import Table
    from .._transport import Client
    from .._tree.root import Worker

__all__ = ["Harness", "NotIdle"]

#: Lease timing for one in-process worker: it owns every partition within a fraction of a second.
TEST_LEASE_TIMING = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)
POLL = 0.005


class NotIdle(AssertionError):
    """``wait_idle`` timed out: the message lists what was still to handle, per partition."""


@attrs.frozen
class _Reading:
    stream: str
    partition: int
    actor: str
    lag: int | None
    pending: int
    length: int

    @property
    def idle(self) -> bool:
        return self.lag == 0 and self.pending == 0

    def __str__(self) -> str:
        lag = "group not created yet" if self.lag is None else f"lag {self.lag}"
        return (f"{self.actor} on {self.stream}[{self.partition}]: {lag}, "
                f"pending {self.pending}")


class Harness:
    """``async with Harness(system) as h:`` a real worker of ``system``, in-process.

    Args:
        system: the System under test. While the harness runs, its ``redis_url`` points at the
            harness's Redis and its worker installs no signal handlers; both are restored after.
        redis_url: a Redis to use instead of starting one (it is not flushed: give each test
            its own System name, or its own database).
        lease_timing: the worker's lease timing (default: short, so that one worker owns every
            partition at once).
        ready_timeout: seconds for the worker to own every partition.
    """

    def __init__(
        self,
        system: System,
        *,
        redis_url: str | None = None,
        lease_timing: LeaseTiming | None = TEST_LEASE_TIMING,
        ready_timeout: float = 10.0,
    ) -> None:
        self.system = system
        self._given_url = redis_url
        self._lease_timing = lease_timing
        self._ready_timeout = ready_timeout
        self.server: RedisServer | None = None
        self._worker: Worker | None = None
        self._nursery_cm: Any = None
        self._saved: tuple[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL of the Redis the system runs on."""
        if self.server is not None:
            return self.server.url
        if self._given_url is None:
            raise RuntimeError("the harness is not running")
        return self._given_url

    @property
    def worker(self) -> Worker:
        """The running worker (``statistics()`` for its partitions)."""
        if self._worker is None:
            raise RuntimeError("the harness is not running")
        return self._worker

    async def __aenter__(self) -> Self:
        system = self.system
        if self._given_url is None:
            self.server = RedisServer().start()
        self._saved = (system.redis_url, system.settings)
        system.redis_url = self.url
        changes: dict[str, Any] = {"install_signal_handlers": False}
        if self._lease_timing is not None:
            changes["lease_timing"] = self._lease_timing
        system.settings = attrs.evolve(system.settings, **changes)
        try:
            self._nursery_cm = trio.open_nursery()
            nursery = await self._nursery_cm.__aenter__()
            try:
                self._worker = await nursery.start(system.start)
                await self._wait_ready()
            except BaseException as exc:
                if self._worker is not None:
                    self._worker.request_stop()
                nursery.cancel_scope.cancel()
                await self._nursery_cm.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        except BaseException:
            self._restore()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            if self._worker is not None:
                self._worker.request_stop()
            # The worker's nursery sees how the block ended, as if the block ran inside it.
            result: bool | None = await self._nursery_cm.__aexit__(*exc_info)
            return result
        finally:
            self._worker = None
            self._restore()

    def _restore(self) -> None:
        if self._saved is not None:
            self.system.redis_url, self.system.settings = self._saved
            self._saved = None
        if self.server is not None:
            self.server.close()
            self.server = None

    def run(self, scenario: Callable[[Harness], Awaitable[Any]]) -> Any:
        """From a plain (not async) test: ``trio.run`` the scenario inside the harness."""

        async def main() -> Any:
            async with self:
                return await scenario(self)

        return trio.run(main)

    async def _wait_ready(self) -> None:
        """Until the worker owns and runs every partition of every actor."""
        wanted = sum(spec.stream.partitions for spec in self.system.actors.values())
        with trio.move_on_after(self._ready_timeout) as scope:
            while True:
                stats = self.worker.statistics().partitions
                if sum(1 for p in stats if p.state == "running") >= wanted:
                    return
                await trio.sleep(POLL)
        if scope.cancelled_caught:
            raise NotIdle(f"the worker did not own all {wanted} partitions within "
                          f"{self._ready_timeout:g}s")

    # -- waiting ------------------------------------------------------------------------------

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Return once every event sent so far is handled or dead-lettered.

        Raises ``NotIdle`` (an ``AssertionError``) after ``timeout`` seconds, saying what is
        left per partition: a handler that never finishes, a partition backing off.
        """
        readings: list[_Reading] = []
        idle_in_a_row = 0
        needed = 1 if await self._single_node() else 2
        with trio.move_on_after(timeout):
            while True:
                readings = await self._read_state()
                idle_in_a_row = idle_in_a_row + 1 if all(r.idle for r in readings) else 0
                if idle_in_a_row >= needed:
                    return
                await trio.sleep(POLL)
        busy = "; ".join(str(r) for r in readings if not r.idle)
        raise NotIdle(f"not idle after {timeout:g}s: {busy}")

    async def _single_node(self) -> bool:
        client = self.system.client()
        await client.execute("PING")
        return client.cluster is False

    async def _read_state(self) -> list[_Reading]:
        client = self.system.client()
        app = self.system.name
        slots = [(spec.name, spec.stream, p) for spec in self.system.actors.values()
                 for p in range(spec.stream.partitions)]
        commands: list[list[Any]] = []
        for _actor, stream, p in slots:
            key = _keys.stream_key(app, stream.name, p)
            commands += [["XINFO", "STREAM", key], ["XINFO", "GROUPS", key]]
        replies = await _atomically(client, commands)
        out = []
        for i, (actor, stream, p) in enumerate(slots):
            info, groups = pairs(replies[2 * i]), replies[2 * i + 1]
            length = int(info.get("length", 0))
            group = _group(groups, actor)
            if group is None:  # not created yet: idle only if nothing was sent
                lag, pending = (None if length else 0), 0
            else:
                lag, pending = _lag(group, info), int(group.get("pending", 0))
            out.append(_Reading(stream.name, p, actor, lag, pending, length))
        return out

    # -- reading effects ----------------------------------------------------------------------

    async def dead_letters(self, stream: Stream[Any] | None = None) -> list[DeadLetter]:
        """The dead letters of the system (or of one stream), oldest move first."""
        from ..dlq import ALL, DeadLetterSource, Selection, list_dead_letters

        selection = Selection(stream=stream.name) if stream is not None else ALL
        return await list_dead_letters(DeadLetterSource.of(self.system), selection,
                                       client=self.system.client(), limit=None)

    async def read(self, stream: Stream[Any]) -> list[Any]:
        """Every event in ``stream`` (an output of your handlers), decoded, partition by
        partition and in each in stream order."""
        client = self.system.client()
        replies = await client.pipeline(
            [["XRANGE", stream.stream_key(p), "-", "+"] for p in range(stream.partitions)]
        )
        events = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            events += [stream.format.decode(fields) for _id, fields in reply]
        return events

    async def table(self, table: Table[Any]) -> dict[Any, Any]:
        """Every key and value of a table, across its partitions, as committed."""
        return await table.snapshot()


async def _atomically(client: Client, commands: list[list[Any]]) -> list[Any]:
    """One MULTI/EXEC on a single Redis (a consistent reading); a pipeline on a Cluster."""
    if client.cluster is False:
        replies = await client.pipeline([["MULTI"], *commands, ["EXEC"]])
        result = replies[-1]
        if isinstance(result, Exception):
            raise result
        return list(result)
    return await client.pipeline(commands)


def _group(groups: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(groups, list):
        return None
    for group in groups:
        fields = pairs(group)
        if text(fields.get("name", b"")) == name:
            return fields
    return None


def _lag(group: dict[str, Any], stream: dict[str, Any]) -> int:
    """XINFO's lag (Redis 7); else 0 if the group was delivered the last entry, else 1 (some)."""
    lag = group.get("lag")
    if isinstance(lag, int):
        return lag
    if int(stream.get("length", 0)) == 0:
        return 0
    last = stream.get("last-generated-id")
    return 0 if last is not None and group.get("last-delivered-id") == last else 1
