"""A bounded pool of connections, dedicated connections for blocking reads, and Lua scripts.

Retry policy (deliberately small):

- Establishing a connection is retried with exponential backoff and jitter for up to
  ``connect_retry_for`` seconds; nothing has been sent yet, so this is always safe.
- A command that was written is never retried by the transport: a lost connection surfaces as
  ``redis.exceptions.ConnectionError`` (or ``TimeoutError``). The caller decides; actors crash and
  their supervisor restarts them, which is safe because every side effect is fenced and acks are
  idempotent. This is what keeps a non-idempotent XADD from ever being duplicated by us.
- The one exception is ``EVALSHA`` answered with ``NOSCRIPT``: the script did not run, so it is
  loaded and called again.
- After a connection is lost or a request timed out, idle pooled connections older than that
  are dropped, so one Redis restart (or a path gone half-open) costs one failed request rather
  than one per pooled connection.

Redis Cluster: on first use the client asks its node ``INFO cluster``; on a Cluster node every
request goes through a ``ClusterRouter`` (``_cluster.py``), with one pool like this one per node.
On one Redis the only cost is one attribute test per request.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from attrs import frozen
from redis import exceptions as rex

from ._cluster import Addr, ClusterRouter, Connection, SlotConnection, slot_of
from ._config import ConnectionConfig
from ._connection import Arg, Command, NodeConnection


@frozen
class ClientStatistics:
    open_connections: int
    idle_connections: int
    in_use: int
    dedicated: int
    created_total: int
    discarded_total: int
    max_connections: int


class Script:
    """A Lua script called by SHA; loaded on demand and reloaded after ``SCRIPT FLUSH``."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, source: str, name: str = "script") -> None:
        self.source = source
        self.name = name
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def from_file(cls, path: Path) -> Script:
        return cls(path.read_text(), name=path.stem)

    def command(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


def default_client_name(role: str = "client") -> str:
    host = socket.gethostname().replace(" ", "_")
    return f"actorstream:{role}:{host}:{os.getpid()}"


class Client:
    """Redis client for trio. Use ``async with Client.from_url(url) as client``."""

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        client_name: str | None = None,
        max_connections: int = 32,
        connect_retry_for: float = 2.0,
        cluster: bool | None = None,
    ) -> None:
        """``cluster``: None finds out from the server (``INFO cluster``) on first use; True or
        False skips the question."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.config = config
        self.client_name = client_name or default_client_name()
        self.max_connections = max_connections
        self.connect_retry_for = connect_retry_for
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[NodeConnection] = []
        self._in_use = 0
        self._dedicated = 0
        self._created = 0
        self._discarded = 0
        self._lost_at = -math.inf
        self._failures = 0
        self._next_connect_at = -math.inf
        self._closed = False
        self._rng = random.Random()
        # True until the server says it is not a Cluster node: requests then take the plain path.
        self._routed = cluster is not False
        self._router: ClusterRouter | None = ClusterRouter(self) if cluster else None
        self._mode_lock = trio.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Client:
        """Build a client; ``socket_timeout``/``connect_timeout`` kwargs override the URL's."""
        overrides = {k: kwargs.pop(k) for k in ("socket_timeout", "connect_timeout") if k in kwargs}
        return cls(ConnectionConfig.from_url(url, **overrides), **kwargs)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discarded += 1
            await conn.aclose()
        if self._router is not None:
            for pool in list(self._router.pools.values()):
                await pool.aclose()

    def close_nowait(self) -> None:
        """Close at once, without awaiting (idle sockets have nothing in flight).

        For cleanup where awaiting is impossible, e.g. at the end of a trio run.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discarded += 1
            _close_now(conn)
        if self._router is not None:
            for pool in list(self._router.pools.values()):
                pool.close_nowait()

    def statistics(self) -> ClientStatistics:
        """Pool figures; on a Cluster, summed over the pools of all nodes (and the seed's)."""
        pools = [self, *self._router.pools.values()] if self._router is not None else [self]
        idle = sum(len(p._idle) for p in pools)
        in_use = sum(p._in_use for p in pools)
        return ClientStatistics(
            open_connections=idle + in_use + self._dedicated,
            idle_connections=idle,
            in_use=in_use,
            dedicated=self._dedicated,
            created_total=sum(p._created for p in pools),
            discarded_total=sum(p._discarded for p in pools),
            max_connections=self.max_connections * max(1, len(pools) - 1),  # per node
        )

    @property
    def last_lost_at(self) -> float:
        """When this client (any node's pool, on a Cluster) last lost a connection or had a
        request time out, in trio time; ``-inf`` if never."""
        pools = [self, *self._router.pools.values()] if self._router is not None else [self]
        return max(p._lost_at for p in pools)

    # -- Cluster mode -------------------------------------------------------------------------

    @property
    def cluster(self) -> bool | None:
        """True on a Redis Cluster, False on one Redis, None until the first request."""
        if self._router is not None:
            return True
        return None if self._routed else False

    async def _cluster_router(self) -> ClusterRouter | None:
        """The router on a Cluster, None on one Redis.

        The first connection the client opens asks ``INFO cluster`` in its set-up round trip
        (see ``_open``), so finding out costs no extra round trip and no extra connection.
        """
        router = self._router
        if router is not None and router.map.primaries:
            return router
        async with self._mode_lock:  # one task finds out; the others wait for its answer
            router = self._router
            if router is None:
                if not self._routed:
                    return None
                conn = await self._acquire()
                self._release(conn)
                router = self._router
                if router is None:
                    return None
            if not router.map.primaries:
                # The seed's pooled connections become its node pool's: no reconnect.
                seed = router.pool((self.config.host, self.config.port))
                room = seed.max_connections - len(seed._idle)
                seed._idle.extend(self._idle[:room])
                for extra in self._idle[room:]:
                    self._discarded += 1
                    _close_now(extra)
                self._idle = []
                await router.refresh()
            return router

    def _learn_mode(self, conn: NodeConnection) -> None:
        if conn.cluster_enabled is None or not self._routed or self._router is not None:
            return
        if conn.cluster_enabled:
            self._router = ClusterRouter(self)
        else:
            self._routed = False

    def _node_pool(self, addr: Addr) -> Client:
        """The bounded pool of one Cluster node (the router retries connects, with refreshes)."""
        return Client(
            self.config.for_node(*addr),
            client_name=self.client_name,
            max_connections=self.max_connections,
            connect_retry_for=0.0,
            cluster=False,
        )

    async def primaries(self) -> list[Client]:
        """One client per primary (``[self]`` on one Redis): for SCAN, KEYS, DBSIZE, INFO."""
        router = await self._cluster_router() if self._routed else None
        if router is None:
            return [self]
        return await router.primaries()

    # -- connections --------------------------------------------------------------------------

    async def _open(self, role: str = "pool") -> NodeConnection:
        """Open a connection, retrying with backoff and jitter for ``connect_retry_for`` s."""
        if self._closed:
            raise rex.ConnectionError("client is closed")
        give_up_at = trio.current_time() + self.connect_retry_for
        while True:
            wait = self._next_connect_at - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            try:
                conn = await NodeConnection.open(
                    self.config,
                    client_name=self.client_name,
                    probe_cluster=self._routed and self._router is None,
                )
            except (rex.AuthenticationError, rex.NoPermissionError):
                raise  # a wrong password does not get better with retries (and it is a
                #        ConnectionError subclass in redis-py, so it must be caught first)
            except (rex.ConnectionError, rex.TimeoutError):
                self._failures += 1
                delay = min(1.0, 0.025 * 2 ** min(self._failures, 10))
                delay *= 0.5 + self._rng.random() / 2
                self._next_connect_at = trio.current_time() + delay
                if trio.current_time() + delay > give_up_at:
                    raise
                continue
            self._failures = 0
            self._next_connect_at = -math.inf
            self._created += 1
            self._learn_mode(conn)
            return conn

    def _note_lost(self) -> None:
        self._lost_at = trio.current_time()
        stale = [c for c in self._idle if c.created_at <= self._lost_at]
        if stale:
            self._idle = [c for c in self._idle if c.created_at > self._lost_at]
            for conn in stale:
                conn.broken = True
                self._discarded += 1
                # Idle sockets have no request in flight; closing them needs no await here.
                _close_now(conn)

    async def _acquire(self) -> NodeConnection:
        # The request itself checkpoints; skipping the semaphore's own checkpoint when a slot is
        # free saves a scheduler round trip per command (a third of a PING's latency).
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            if self._idle:
                conn = self._idle.pop()
            else:
                conn = await self._open()
        except BaseException:
            self._slots.release()
            raise
        self._in_use += 1
        return conn

    def _release(self, conn: NodeConnection) -> None:
        self._in_use -= 1
        self._slots.release()
        if conn.broken or self._closed:
            self._discarded += 1
            if conn.lost:
                self._note_lost()
            else:
                _close_now(conn)
        else:
            self._idle.append(conn)

    @asynccontextmanager
    async def connection(self, key: Arg | None = None) -> AsyncIterator[Connection]:
        """Borrow a pooled connection for several requests in a row.

        On a Cluster: a slot-bound connection of its own (for ``key``'s slot, or the first key
        it is used with), as ``dedicated()`` gives.
        """
        if self._routed and await self._cluster_router() is not None:
            async with self.dedicated("conn", key=key) as routed:
                yield routed
            return
        conn = await self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    @asynccontextmanager
    async def dedicated(
        self, role: str = "reader", *, key: Arg | None = None
    ) -> AsyncIterator[Connection]:
        """A connection of its own, outside the pool: for ``BLOCK`` reads that may wait long.

        On a Cluster it serves one slot (``key``'s, or else the first key it is used with) on
        whichever node owns that slot, following it when it moves; see ``SlotConnection``.
        """
        conn: NodeConnection | None = None
        if self._routed and self._router is None:
            conn = await self._open(role)  # its set-up round trip tells whether on a Cluster
            if self._router is not None:
                with trio.CancelScope(shield=True):
                    await conn.aclose()
                conn = None
        router = await self._cluster_router() if self._routed else None
        if router is not None:
            slot_conn = SlotConnection(router, role, None if key is None else slot_of(key))
            self._dedicated += 1
            try:
                yield slot_conn
            finally:
                self._dedicated -= 1
                self._discarded += 1
                with trio.CancelScope(shield=True):
                    await slot_conn.aclose()
            return
        if conn is None:
            conn = await self._open(role)
        self._dedicated += 1
        try:
            yield conn
        finally:
            self._dedicated -= 1
            self._discarded += 1
            with trio.CancelScope(shield=True):
                await conn.aclose()

    # -- requests -----------------------------------------------------------------------------

    async def execute(self, *args: Arg, timeout: float | None = math.inf) -> Any:
        if self._routed:
            router = await self._cluster_router()
            if router is not None:
                return await router.execute(args, timeout)
        conn = await self._acquire()
        try:
            return await conn.execute(*args, timeout=timeout)
        finally:
            self._release(conn)

    async def pipeline(
        self, commands: Sequence[Command], *, timeout: float | None = math.inf
    ) -> list[Any]:
        """Run commands in one round trip; error replies are returned in place, not raised.

        On a Cluster: one round trip per node involved, concurrently; a transaction (WATCH or
        MULTI) must keep to one slot.
        """
        if self._routed:
            router = await self._cluster_router()
            if router is not None:
                return await router.pipeline(commands, timeout)
        conn = await self._acquire()
        try:
            return await conn.pipeline(commands, timeout=timeout)
        finally:
            self._release(conn)

    async def evalsha(
        self, script: Script, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        if self._routed:
            router = await self._cluster_router()
            if router is not None:
                return await router.execute(script.command(keys, args), math.inf, script)
        conn = await self._acquire()
        try:
            return await evalsha_on(conn, script, keys, args)
        finally:
            self._release(conn)

    async def evalsha_many(
        self, script: Script, calls: Sequence[tuple[Sequence[Arg], Sequence[Arg]]]
    ) -> list[Any]:
        """One pipeline of EVALSHA calls ``(keys, args)``; replies (or errors) in place.

        Calls answered NOSCRIPT did not run: the script is loaded and only those run again.
        """
        commands = [script.command(keys, args) for keys, args in calls]
        replies = await self.pipeline(commands)
        missing = [i for i, r in enumerate(replies) if isinstance(r, rex.NoScriptError)]
        if missing:
            for node in await self.primaries():  # on a Cluster, each node has its script cache
                await node.execute("SCRIPT", "LOAD", script.source)
            again = await self.pipeline([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies


async def evalsha_on(
    conn: Connection, script: Script, keys: Sequence[Arg], args: Sequence[Arg]
) -> Any:
    """EVALSHA on one connection, loading the script after NOSCRIPT (it did not run, so safe)."""
    try:
        return await conn.execute(*script.command(keys, args))
    except rex.NoScriptError:
        await conn.execute("SCRIPT", "LOAD", script.source)
        return await conn.execute(*script.command(keys, args))


def _close_now(conn: NodeConnection) -> None:
    """Close an idle connection synchronously (its socket has no request in flight)."""
    conn.broken = True
    stream: Any = conn._stream
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    if sock is not None:
        sock.close()
