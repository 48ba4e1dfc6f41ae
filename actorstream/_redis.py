"""``RedisClient``: the public way for handlers, tasks and producers to use Redis.

Handlers constantly need Redis (a counter, a cache, an idempotency key): ``system.redis`` gives
them the System's own connection pool (the worker's while it runs, else that of
``async with system``, else one per trio run), on actorstream's trio transport, so a handler
needs no second client, no threads and no second pool. It is deliberately small: commands,
pipelines and transactions, in Redis's own command names, replies as Redis sends them (bytes,
ints, lists, None). The transport behind it stays private.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import trio
from redis import exceptions as rex

from ._transport import Client

__all__ = ["Arg", "Pipeline", "RedisClient", "run_client"]

#: A command argument: sent as its bytes (str as UTF-8, numbers in decimal).
Arg = bytes | str | int | float


class RedisClient:
    """Commands and pipelines on a System's connection pool: ``system.redis``.

    ::

        @system.actor(orders)
        async def bill(order: Order) -> None:
            await system.redis.execute("INCRBY", f"billed:{order.customer}", order.amount)

    Replies are Redis's own: ``bytes`` for strings, ``int``, ``list``, ``None``. An error reply
    raises its ``redis.exceptions`` class (``ResponseError``, ...); a lost connection raises
    ``redis.exceptions.ConnectionError`` (in a handler, that is a failure like any other:
    redelivered, and an outage when every event fails). On Redis Cluster a command goes to the
    node of its key; a pipeline's commands to their nodes, one round trip per node.
    """

    def __init__(self, client: Callable[[], Client]) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "<RedisClient>"

    async def execute(self, *args: Arg, timeout: float | None = None) -> Any:
        """Run one command (``"SET", "k", "v"``) and return its reply.

        ``timeout``: seconds to wait for the reply (default: the URL's socket timeout); the
        connection is closed if it expires, so no late reply is ever read as another's.
        """
        return await self._client().execute(*args, timeout=_timeout(timeout))

    def pipeline(self, *, transaction: bool = False) -> Pipeline:
        """Commands to send in one round trip: ``add`` them, then ``await execute()``.

        ``transaction=True`` wraps them in MULTI/EXEC: all or none, nothing in between (on
        Cluster, every key in one slot: give them one hash tag, ``{user:42}:...``).
        """
        return Pipeline(self._client, transaction=transaction)


class Pipeline:
    """A batch of commands, sent in one write and answered in one read.

    ::

        pipe = system.redis.pipeline()
        pipe.add("INCR", "hits").add("EXPIRE", "hits", 60)
        hits, _ = await pipe.execute()

    or, sent when the block ends (replies in ``pipe.replies``)::

        async with system.redis.pipeline(transaction=True) as pipe:
            pipe.add("SET", "{user:1}:name", "Ada")
            pipe.add("SADD", "{user:1}:roles", "admin")
    """

    def __init__(self, client: Callable[[], Client], *, transaction: bool = False) -> None:
        self._client = client
        self.transaction = transaction
        self.commands: list[tuple[Arg, ...]] = []
        #: The replies of the last ``execute`` (also set by ``async with``).
        self.replies: list[Any] = []

    def __len__(self) -> int:
        return len(self.commands)

    def add(self, *args: Arg) -> Self:
        """Queue one command; returns the pipeline, so calls chain."""
        if not args:
            raise ValueError("a command needs at least its name")
        self.commands.append(args)
        return self

    async def execute(self, *, raise_on_error: bool = True, timeout: float | None = None
                      ) -> list[Any]:
        """Send the queued commands; their replies, in order. The queue is emptied.

        Every command runs even if one fails (as in Redis); then, with ``raise_on_error``, the
        first error reply is raised, else error replies are returned in place as exceptions.
        A transaction whose EXEC Redis refused raises ``redis.exceptions.ExecAbortError``.
        """
        commands, self.commands = self.commands, []
        if not commands:
            self.replies = []
            return []
        client = self._client()
        if self.transaction:
            batch: list[Sequence[Arg]] = [("MULTI",), *commands, ("EXEC",)]
            raw = await client.pipeline(batch, timeout=_timeout(timeout))
            replies = _exec_replies(raw)
        else:
            replies = await client.pipeline(commands, timeout=_timeout(timeout))
        self.replies = replies
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.execute()


def _exec_replies(raw: list[Any]) -> list[Any]:
    """EXEC's array; a queueing error (or EXECABORT) raised as Redis reports it."""
    exec_reply = raw[-1]
    if isinstance(exec_reply, Exception):
        queued = [r for r in raw[1:-1] if isinstance(r, Exception)]
        raise queued[0] if queued else exec_reply
    if exec_reply is None:
        raise rex.WatchError("the transaction was aborted (a WATCHed key changed)")
    return list(exec_reply)


def _timeout(timeout: float | None) -> float:
    # The transport: math.inf means "the URL's socket timeout".
    return math.inf if timeout is None else timeout


async def _close_at_run_end(client: Client) -> None:
    try:
        await trio.sleep_forever()
    finally:
        client.close_nowait()


_RUN_CLIENTS: trio.lowlevel.RunVar[dict[object, Client]] = trio.lowlevel.RunVar(
    "actorstream_clients"
)


def run_client(owner: object, new_client: Callable[[], Client]) -> Client:
    """The client of ``owner`` for this trio run, made on first use and closed at its end."""
    try:
        table = _RUN_CLIENTS.get()
    except LookupError:
        table = {}
        _RUN_CLIENTS.set(table)
    client = table.get(owner)
    if client is None:
        client = table[owner] = new_client()
        # Nobody owns this client: close its sockets when the trio run ends (system tasks are
        # cancelled once the main task has returned), instead of leaving them to the GC.
        trio.lowlevel.spawn_system_task(
            _close_at_run_end, client, name="actorstream: close the producer client"
        )
    return client
