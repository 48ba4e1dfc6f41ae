"""The Cluster slot map and how it is kept fresh: who serves which slot, one pool per node.

``Topology`` is the state half of a ``ClusterRouter``: the map (read from ``CLUSTER SHARDS``,
or ``CLUSTER SLOTS`` on older servers), the per-node pools, and the refresh rules (rate-limited,
suspect nodes asked last). ``Budget`` bounds the redirects and backoff of one request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import trio
from redis import exceptions as rex
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from ._connection import NodeConnection
from ._errors import UnblockedError
from ._slots import arg_text

if TYPE_CHECKING:
    from ._client import Client

SLOTS = REDIS_CLUSTER_HASH_SLOTS
Addr: TypeAlias = tuple[str, int]

#: Replies that prove the command was refused before it ran (so it may be sent again).
RETRYABLE = (rex.TryAgainError, rex.ClusterDownError, UnblockedError)
REDIRECTS = (rex.MovedError, rex.AskError, *RETRYABLE)
_MAX_REDIRECTS = 16
#: How long a slot-map query may take before the next node is asked (a paused node hangs).
_MAP_TIMEOUT = 2.0
#: Refreshes triggered by redirects are at most this frequent (a reshard sends many MOVED).
_REFRESH_EVERY = 0.1
#: A node that failed is asked for the slot map last for this long.
_SUSPECT_FOR = 10.0

# -- the slot map -------------------------------------------------------------------------------


class SlotMap:
    """Who serves which slot. ``owners[slot]`` is a primary's address (None if unassigned)."""

    __slots__ = ("owners", "primaries", "replicas")

    def __init__(self) -> None:
        self.owners: list[Addr | None] = [None] * SLOTS
        self.primaries: list[Addr] = []
        self.replicas: dict[Addr, list[Addr]] = {}

    def assign(self, start: int, end: int, primary: Addr, replicas: Sequence[Addr]) -> None:
        owners = self.owners
        for slot in range(start, end + 1):
            owners[slot] = primary
        if primary not in self.replicas:
            self.primaries.append(primary)
            self.replicas[primary] = list(replicas)


def _fields(flat: Sequence[Any]) -> dict[str, Any]:
    """A RESP2 map (a flat list of key, value) as a dict with str keys."""
    return {arg_text(flat[i]).lower(): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_shards(reply: Sequence[Any], asked: Addr, tls: bool) -> SlotMap:
    """Parse ``CLUSTER SHARDS`` (Redis 7+). A failed primary is skipped if a healthy one exists."""
    smap = SlotMap()
    for shard in reply:
        info = _fields(shard)
        ranges = [int(x) for x in info.get("slots") or []]
        if not ranges:
            continue
        primary: Addr | None = None
        fallback: Addr | None = None
        replicas: list[Addr] = []
        for raw in info.get("nodes") or []:
            node = _fields(raw)
            port = node.get("tls-port") if tls and node.get("tls-port") else node.get("port")
            if port is None:
                continue
            host = _str(node.get("endpoint") or b"")
            if host in ("", "?"):
                host = _str(node.get("ip") or b"") or asked[0]
            addr = (host, int(port))
            role = _str(node.get("role", b""))
            health = _str(node.get("health", b"online"))
            if role == "master":
                if health != "fail" and primary is None:
                    primary = addr
                elif fallback is None:
                    fallback = addr
            elif health == "online":
                replicas.append(addr)
        owner = primary or fallback
        if owner is None:
            continue
        for i in range(0, len(ranges) - 1, 2):
            smap.assign(ranges[i], ranges[i + 1], owner, replicas)
    return smap


def parse_slots(reply: Sequence[Any], asked: Addr) -> SlotMap:
    """Parse ``CLUSTER SLOTS`` (the fallback for servers without CLUSTER SHARDS)."""
    smap = SlotMap()
    for entry in reply:
        start, end = int(entry[0]), int(entry[1])
        nodes: list[Addr] = []
        for node in entry[2:]:
            host = _str(node[0]) or asked[0]
            nodes.append((host, int(node[1])))
        if nodes:
            smap.assign(start, end, nodes[0], nodes[1:])
    return smap


# -- routing ------------------------------------------------------------------------------------


class NotSent(Exception):
    """Connecting to a node failed: nothing of the request was written, so it may be resent."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Budget:
    """Redirects and backoff of one request, bounded in count and in time."""

    def __init__(self, router: Topology) -> None:
        self.router = router
        self.deadline = trio.current_time() + max(router.owner.connect_retry_for, 0.5)
        self.redirects = 0
        self.failures = 0

    def redirected(self, reply: Exception) -> None:
        self.redirects += 1
        self.router.redirects += 1
        if self.redirects > _MAX_REDIRECTS:
            raise rex.ClusterError(
                f"more than {_MAX_REDIRECTS} Cluster redirections; last: {reply}"
            ) from reply

    async def backoff(self, reason: Exception) -> None:
        """Sleep with jitter and refresh the slot map, or raise ``reason`` if out of time."""
        self.failures += 1
        delay = min(0.5, 0.01 * 2 ** min(self.failures, 10))
        delay *= 0.5 + self.router.rng.random() / 2
        if trio.current_time() + delay > self.deadline:
            raise reason
        await trio.sleep(delay)
        await self.router.refresh_quietly()


class Topology:
    """The slot map of one ``Client``'s Cluster and its per-node pools."""

    def __init__(self, owner: Client) -> None:
        self.owner = owner
        config = owner.config
        self.seeds: list[Addr] = [(config.host, config.port), *config.cluster_nodes]
        self.map = SlotMap()
        self.pools: dict[Addr, Client] = {}
        self.stale = True
        self.redirects = 0
        self.rng = random.Random()
        self._refresh_lock = trio.Lock()
        self._refreshed_at = -math.inf
        self._failed_at: dict[Addr, float] = {}

    # -- the map --------------------------------------------------------------------------

    def pool(self, addr: Addr) -> Client:
        pool = self.pools.get(addr)
        if pool is None:
            pool = self.pools[addr] = self.owner._node_pool(addr)
        return pool

    def owner_of(self, slot: int | None) -> Addr | None:
        if slot is None:
            primaries = self.map.primaries
            return self.rng.choice(primaries) if primaries else None
        return self.map.owners[slot]

    async def refresh(self, *, min_interval: float = 0.0) -> None:
        """Read the slot map from the first node that answers (primaries, then seeds)."""
        if self._refresh_lock.locked():
            async with self._refresh_lock:
                return  # someone else just refreshed
        async with self._refresh_lock:
            if trio.current_time() - self._refreshed_at < min_interval:
                return
            known = list(self.map.primaries)
            self.rng.shuffle(known)
            candidates = list(dict.fromkeys([*known, *self.seeds, *self.pools]))
            # Nodes that failed lately go last: a dead or paused node costs a timeout each time.
            recent = trio.current_time() - _SUSPECT_FOR
            candidates.sort(key=lambda a: self._failed_at.get(a, -math.inf) > recent)
            errors: list[str] = []
            for addr in candidates:
                try:
                    smap = await self._fetch(addr)
                except (rex.AuthenticationError, rex.NoPermissionError):
                    raise
                except (rex.ConnectionError, rex.TimeoutError, rex.ResponseError) as exc:
                    self.failed(addr)
                    errors.append(f"{addr[0]}:{addr[1]}: {exc}")
                    continue
                if not smap.primaries:
                    errors.append(f"{addr[0]}:{addr[1]}: serves no slots")
                    continue
                self._install(smap)
                return
            raise rex.ConnectionError(
                "no Redis Cluster node answered with a slot map: " + "; ".join(errors)
            )

    def failed(self, addr: Addr) -> None:
        """A node did not answer: re-read the map soon, and ask that node last."""
        self._failed_at[addr] = trio.current_time()
        self.stale = True

    async def refresh_quietly(self) -> None:
        """Refresh if due; a failure only leaves the map stale (the request's own error wins).

        Requests do not queue behind a refresh in progress while there is a map to use.
        """
        if self._refresh_lock.locked() and self.map.primaries:
            return
        try:
            await self.refresh(min_interval=_REFRESH_EVERY)
        except (rex.ConnectionError, rex.TimeoutError):
            self.stale = True

    async def _fetch(self, addr: Addr) -> SlotMap:
        pool = self.pool(addr)
        timeout = min(_MAP_TIMEOUT, self.owner.config.socket_timeout or _MAP_TIMEOUT)
        try:
            reply = await pool.execute("CLUSTER", "SHARDS", timeout=timeout)
        except rex.ResponseError as exc:
            if "unknown" not in str(exc).lower():
                raise
            return parse_slots(await pool.execute("CLUSTER", "SLOTS", timeout=timeout), addr)
        return parse_shards(reply, addr, self.owner.config.tls)

    def _install(self, smap: SlotMap) -> None:
        self.map = smap
        self.stale = False
        self._refreshed_at = trio.current_time()
        keep = set(smap.primaries) | set(self.seeds)
        for replicas in smap.replicas.values():
            keep.update(replicas)
        for addr in [a for a in self.pools if a not in keep]:
            self.pools.pop(addr).close_nowait()

    def moved(self, reply: rex.MovedError) -> None:
        """MOVED: the slot lives elsewhere now; note it at once and refresh the rest soon."""
        self.map.owners[reply.slot_id] = (reply.host, reply.port)
        self.stale = True

    async def primaries(self) -> list[Client]:
        if self.stale:
            await self.refresh()
        return [self.pool(addr) for addr in self.map.primaries]

    async def acquire(self, pool: Client) -> NodeConnection:
        """A pooled connection to a node; failing to connect raises ``NotSent`` (resendable)."""
        try:
            return await pool._acquire()
        except (rex.AuthenticationError, rex.NoPermissionError):
            raise
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            raise NotSent(exc) from exc
