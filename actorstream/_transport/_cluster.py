"""Redis Cluster routing: slot map, one bounded pool per node, redirects, slot-bound connections.

A ``Client`` finds out on first use whether its URL points at a Cluster node (``INFO cluster``);
if so it hands every request to a ``ClusterRouter``. Nothing here runs for a single Redis.

Retry rule (docs/transport.md): a command that was written is sent again only when its reply
proves it did not run. ``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN`` and ``UNBLOCKED`` are
such proof (the node refused it before executing it); a lost connection is not, so it raises
``ConnectionError`` as on one Redis (and marks the slot map stale). Failing to *connect* to a
node sent nothing, so it is retried on the refreshed map, with backoff, for ``connect_retry_for``.

A ``SlotConnection`` is the Cluster form of a dedicated connection: bound to one slot (the first
key it sees, or the one given), it follows the slot to its new owner when a reply says it moved.
WATCH and MULTI state cannot follow, so a redirect while that state is held raises
``SlotMovedError`` (a ``ConnectionError``): the caller starts its fenced session again, exactly as
after a lost connection.

The pieces: ``_slots`` (which arguments are keys, their slots), ``_topology`` (the slot map, its
refresh, per-node pools, the redirect budget), ``_cluster_pipeline`` (pipelines and transactions
over several nodes), ``_slot_connection`` (``SlotConnection``); this module routes one command
and re-exports the names the rest of the package uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis import exceptions as rex

from ._cluster_pipeline import pipeline
from ._connection import Command
from ._errors import UnblockedError
from ._slot_connection import Connection, SlotConnection
from ._slots import EVERY_PRIMARY, command_keys, command_name, command_slot, slot_of
from ._topology import (
    RETRYABLE,
    Addr,
    Budget,
    NotSent,
    SlotMap,
    Topology,
    parse_shards,
    parse_slots,
)

if TYPE_CHECKING:
    from ._client import Script

__all__ = [
    "Addr",
    "ClusterRouter",
    "Connection",
    "SlotConnection",
    "SlotMap",
    "command_keys",
    "command_slot",
    "parse_shards",
    "parse_slots",
    "slot_of",
]


class ClusterRouter(Topology):
    """Routes the requests of one ``Client`` over the nodes of a Redis Cluster."""

    async def execute(
        self, command: Command, timeout: float | None, script: Script | None = None
    ) -> Any:
        if self.stale:
            await self.refresh_quietly()
        slot = command_slot(command)
        if slot is None and command_name(command) in EVERY_PRIMARY:
            return await self._everywhere(command, timeout)
        budget = Budget(self)
        ask: Addr | None = None
        while True:
            addr = ask or self.owner_of(slot)
            if addr is None:
                await budget.backoff(rex.ClusterDownError(f"CLUSTERDOWN slot {slot} unassigned"))
                continue
            try:
                reply = await self._send(addr, command, ask is not None, timeout, script)
            except NotSent as exc:
                self.failed(addr)
                ask = None
                await budget.backoff(exc.cause)
                continue
            if not isinstance(reply, Exception):
                return reply
            ask = None
            if isinstance(reply, rex.MovedError):
                budget.redirected(reply)
                self.moved(reply)
            elif isinstance(reply, rex.AskError):
                budget.redirected(reply)
                ask = (reply.host, reply.port)
            elif isinstance(reply, RETRYABLE):
                await budget.backoff(reply)
            else:
                raise reply

    async def _send(
        self,
        addr: Addr,
        command: Command,
        asking: bool,
        timeout: float | None,
        script: Script | None,
    ) -> Any:
        pool = self.pool(addr)
        conn = await self.acquire(pool)
        try:
            commands: list[Command] = [("ASKING",), command] if asking else [command]
            reply = (await conn.pipeline(commands, timeout=timeout))[-1]
            if script is not None and isinstance(reply, rex.NoScriptError):
                await conn.execute("SCRIPT", "LOAD", script.source)  # it did not run: safe
                reply = (await conn.pipeline(commands, timeout=timeout))[-1]
            if isinstance(reply, UnblockedError):
                conn.broken = True  # the server closes it after -UNBLOCKED
            return reply
        except (rex.ConnectionError, rex.TimeoutError):
            self.failed(addr)  # the node may be gone: look again before the next request
            raise
        finally:
            pool._release(conn)

    async def _everywhere(self, command: Command, timeout: float | None) -> Any:
        replies = [await pool.execute(*command, timeout=timeout) for pool in await self.primaries()]
        return replies[0] if replies else None

    async def pipeline(self, commands: Sequence[Command], timeout: float | None) -> list[Any]:
        """Commands grouped per node, one round trip per node, replies in the callers' order."""
        return await pipeline(self, commands, timeout)
