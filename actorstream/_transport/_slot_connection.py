"""``SlotConnection``: the Cluster form of a dedicated connection, bound to one slot.

A ``SlotConnection`` is the Cluster form of a dedicated connection: bound to one slot (the first
key it sees, or the one given), it follows the slot to its new owner when a reply says it moved.
WATCH and MULTI state cannot follow, so a redirect while that state is held raises
``SlotMovedError`` (a ``ConnectionError``): the caller starts its fenced session again, exactly as
after a lost connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import trio
from redis import exceptions as rex

from ._connection import Command, Commands, NodeConnection
from ._errors import SlotMovedError, UnblockedError
from ._slots import arg_text, command_slot, is_transaction
from ._topology import REDIRECTS, Addr, Budget, Topology

_STATEFUL = frozenset(
    form
    for name in ("MULTI", "WATCH", "EXEC", "DISCARD", "UNWATCH")
    for form in (name, name.lower(), name.encode(), name.lower().encode())
)

# -- slot-bound dedicated connections -----------------------------------------------------------


class SlotConnection(Commands):
    """A dedicated connection for one slot on a Cluster: same API as ``NodeConnection``.

    Opened lazily on the node that owns its slot; follows the slot when a reply proves it moved
    (nothing ran). A request cancelled or lost mid-way breaks it for good, as on one Redis.
    While WATCH or MULTI state is held, a redirect raises ``SlotMovedError`` instead.
    """

    def __init__(self, router: Topology, role: str, slot: int | None) -> None:
        self._router = router
        self._role = role
        self.slot = slot
        self._conn: NodeConnection | None = None
        self._addr: Addr | None = None
        self._stateful = False  # WATCH armed (or MULTI open) on the node connection
        self.broken = False
        self.lost = False
        self.name = router.owner.client_name
        self.created_at = trio.current_time()

    @property
    def node(self) -> Addr | None:
        """The node this connection is open to (None before first use)."""
        return self._addr

    async def aclose(self) -> None:
        self.broken = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    def _bind(self, commands: Sequence[Command]) -> None:
        for command in commands:
            slot = command_slot(command)
            if slot is None:
                continue
            if self.slot is None:
                self.slot = slot
            elif slot != self.slot:
                raise rex.ClusterCrossSlotError(
                    f"CROSSSLOT this connection serves slot {self.slot}; "
                    f"{arg_text(command[0])} touches slot {slot}"
                )

    async def _open(self, budget: Budget) -> NodeConnection:
        while self._conn is None:
            addr = self._router.owner_of(self.slot)
            if addr is None:
                await budget.backoff(rex.ClusterDownError(f"CLUSTERDOWN slot {self.slot}"))
                continue
            try:
                self._conn = await self._router.pool(addr)._open(self._role)
                self._addr = addr
            except (rex.AuthenticationError, rex.NoPermissionError):
                raise
            except (rex.ConnectionError, rex.TimeoutError) as exc:
                self._router.failed(addr)
                await budget.backoff(exc)
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._addr = None
        self._stateful = False
        if conn is not None:
            with trio.CancelScope(shield=True):
                await conn.aclose()

    async def _request(self, commands: Sequence[Command], timeout: float | None) -> list[Any]:
        if self.broken:
            raise rex.ConnectionError("connection is closed")
        self._bind(commands)
        router = self._router
        if router.stale and not self._stateful:
            await router.refresh_quietly()
        budget = Budget(router)
        stateful = self._stateful or is_transaction(commands)
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        while True:
            conn = await self._open(budget)
            batch = [commands[i] for i in pending]
            try:
                got = await conn.pipeline(batch, timeout=timeout)
            except BaseException:
                if conn.broken:  # cancelled, timed out or lost mid-request: never reused
                    self.broken = True
                    self.lost = conn.lost
                    if conn.lost and self._addr is not None:
                        router.failed(self._addr)
                raise
            for i, reply in zip(pending, got, strict=True):
                replies[i] = reply
            self._track_state(batch, got)
            refused = [i for i, r in zip(pending, got, strict=True) if isinstance(r, REDIRECTS)]
            if not refused:
                return replies
            first = replies[refused[0]]
            if stateful:
                raise await self._moved_while_stateful(first, batch, got, replies)
            pending = await self._follow(first, refused, budget, commands, replies, timeout)
            if not pending:
                return replies

    async def _moved_while_stateful(
        self, first: Any, batch: Sequence[Command], got: Sequence[Any], replies: list[Any]
    ) -> SlotMovedError:
        """WATCH/MULTI state cannot follow a redirect: drop the connection, tell the caller."""
        ran = any(
            arg_text(c[0]) == "EXEC" and isinstance(r, list)
            for c, r in zip(batch, got, strict=True)
        )
        where = f"{self._addr[0]}:{self._addr[1]}" if self._addr else "?"
        await self._drop()
        self._router.stale = True
        return SlotMovedError(
            f"slot {self.slot} left {where} ({first}) while this connection held "
            f"WATCH/MULTI state; {'the EXEC ran' if ran else 'no transaction ran'}",
            replies,
            ran,
        )

    async def _follow(
        self,
        first: Any,
        pending: list[int],
        budget: Budget,
        commands: Sequence[Command],
        replies: list[Any],
        timeout: float | None,
    ) -> list[int]:
        """Act on the first refusal (MOVED, ASK or a retryable one) of the ``pending`` commands.

        Returns the commands to send again on the (re)opened connection; empty when ASK answered
        them all.
        """
        router = self._router
        if isinstance(first, rex.MovedError):
            budget.redirected(first)
            router.moved(first)
            await self._drop()
        elif isinstance(first, rex.AskError):
            budget.redirected(first)
            asked = await self._ask(first, [commands[i] for i in pending], timeout)
            for i, reply in zip(pending, asked, strict=True):
                replies[i] = reply
            pending = [i for i in pending if isinstance(replies[i], REDIRECTS)]
            if not pending:
                return pending
            await budget.backoff(replies[pending[0]])
        else:
            if isinstance(first, UnblockedError):
                # The server closes the connection after -UNBLOCKED (a demoted primary).
                await self._drop()
            await budget.backoff(first)
            if router.owner_of(self.slot) != self._addr:
                await self._drop()
        return pending

    async def _ask(
        self, ask: rex.AskError, commands: Sequence[Command], timeout: float | None
    ) -> list[Any]:
        """One-off ASK redirect: ``ASKING`` + command on the importing node, not rebinding."""
        pool = self._router.pool((ask.host, ask.port))
        batch: list[Command] = []
        for command in commands:
            batch += [("ASKING",), command]
        try:
            conn = await pool._acquire()
        except (rex.ConnectionError, rex.TimeoutError):
            return [ask] * len(commands)  # not sent; the caller backs off and tries again
        try:
            raw = await conn.pipeline(batch, timeout=timeout)
        finally:
            pool._release(conn)
        return raw[1::2]

    def _track_state(self, commands: Sequence[Command], replies: Sequence[Any]) -> None:
        for command, reply in zip(commands, replies, strict=True):
            first = command[0]
            if (type(first) is str or type(first) is bytes) and first not in _STATEFUL:
                continue
            name = arg_text(first)
            if name in ("WATCH", "MULTI") and not isinstance(reply, Exception):
                self._stateful = True
            elif name in ("EXEC", "DISCARD", "UNWATCH"):
                self._stateful = False


#: What ``Client.dedicated()`` yields: a plain connection on one Redis, a slot-bound one on a
#: Cluster. Both have ``execute``, ``pipeline`` and ``aclose`` with the same signatures.
Connection: TypeAlias = NodeConnection | SlotConnection
