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
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import trio
from redis import exceptions as rex
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ._connection import Arg, Command, NodeConnection
from ._errors import SlotMovedError, UnblockedError

if TYPE_CHECKING:
    from ._client import Client, Script

SLOTS = REDIS_CLUSTER_HASH_SLOTS
Addr: TypeAlias = tuple[str, int]

#: Replies that prove the command was refused before it ran (so it may be sent again).
_RETRYABLE = (rex.TryAgainError, rex.ClusterDownError, UnblockedError)
_REDIRECTS = (rex.MovedError, rex.AskError, *_RETRYABLE)
_MAX_REDIRECTS = 16
#: How long a slot-map query may take before the next node is asked (a paused node hangs).
_MAP_TIMEOUT = 2.0
#: Refreshes triggered by redirects are at most this frequent (a reshard sends many MOVED).
_REFRESH_EVERY = 0.1
#: A node that failed is asked for the slot map last for this long.
_SUSPECT_FOR = 10.0


# -- which arguments are keys -------------------------------------------------------------------

_KEYLESS = frozenset(
    {
        "ACL", "ASKING", "AUTH", "BGREWRITEAOF", "BGSAVE", "CLIENT", "CLUSTER", "COMMAND",
        "CONFIG", "DEBUG", "DISCARD", "ECHO", "EXEC", "FAILOVER", "FUNCTION", "HELLO", "INFO",
        "LASTSAVE", "LATENCY", "LOLWUT", "MONITOR", "MULTI", "PING", "PUBLISH", "QUIT",
        "READONLY", "READWRITE", "REPLICAOF", "RESET", "ROLE", "SAVE", "SCRIPT", "SELECT",
        "SHUTDOWN", "SLAVEOF", "SLOWLOG", "SWAPDB", "TIME", "UNWATCH", "WAIT",
    }
)
#: Keyless commands whose effect must reach every primary (the first reply is returned).
_EVERY_PRIMARY = frozenset({"FLUSHALL", "FLUSHDB", "SCRIPT LOAD", "SCRIPT FLUSH"})
#: Commands that see one node's keys only: run them on each of ``Client.primaries()``.
_PER_NODE = frozenset({"SCAN", "KEYS", "DBSIZE", "RANDOMKEY"})
_SCRIPTS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_STREAM_READS = frozenset({"XREAD", "XREADGROUP"})
_SUBCOMMAND_KEY = frozenset({"XINFO", "XGROUP", "OBJECT", "MEMORY"})
_ALL_KEYS = frozenset(
    {"DEL", "UNLINK", "EXISTS", "TOUCH", "MGET", "WATCH", "SINTER", "SUNION", "SDIFF", "PFCOUNT"}
)
_PAIRS = frozenset({"MSET", "MSETNX"})
_BLOCKING_POPS = frozenset({"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX"})


def _text(arg: Arg) -> str:
    if isinstance(arg, str):
        return arg.upper()
    if isinstance(arg, (bytes, memoryview)):
        return bytes(arg).decode(errors="replace").upper()
    return str(arg)


def _key_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, memoryview):
        return bytes(arg)
    return str(arg).encode()


def command_name(command: Command) -> str:
    name = _text(command[0])
    if name in ("SCRIPT", "CLUSTER", "CONFIG", "CLIENT") and len(command) > 1:
        return f"{name} {_text(command[1])}"
    return name


_DEFAULT, _NONE, _SCRIPT, _STREAMS, _SUB, _ALL, _PAIR, _BPOP, _NODE = range(9)
#: Command name (str or bytes, upper or lower case) -> where its keys are. Default: argument 1.
_KINDS: dict[Any, int] = {}
for _names, _where in (
    (_KEYLESS | _EVERY_PRIMARY, _NONE),
    (_SCRIPTS, _SCRIPT),
    (_STREAM_READS, _STREAMS),
    (_SUBCOMMAND_KEY, _SUB),
    (_ALL_KEYS, _ALL),
    (_PAIRS, _PAIR),
    (_BLOCKING_POPS, _BPOP),
    (_PER_NODE, _NODE),
):
    for _name in _names:
        if " " not in _name:
            for _form in (_name, _name.lower()):
                _KINDS[_form] = _KINDS[_form.encode()] = _where

#: Slots of recently seen str/bytes keys (partition keys repeat): CRC16 once per key.
_SLOT_CACHE: dict[str | bytes, int] = {}
_SLOT_CACHE_SIZE = 1 << 16


def _kind(command: Command) -> int:
    name = command[0]
    kind = _KINDS.get(name) if type(name) is str or type(name) is bytes else None
    if kind is None:
        kind = _KINDS.get(_text(name), _DEFAULT)
        if (type(name) is str or type(name) is bytes) and len(_KINDS) < 4096:
            _KINDS[name] = kind  # remember this spelling of the name
    return kind


def command_keys(command: Command) -> Sequence[Arg]:
    """The key arguments of a command (a table for the commands Redis users send; keyless if
    the command has none). Commands that would silently see one node only are refused."""
    kind = _kind(command)
    if kind == _DEFAULT:
        return command[1:2]
    if kind == _NONE:
        return ()
    if kind == _SCRIPT:
        numkeys = int(command[2]) if len(command) > 2 else 0
        return command[3 : 3 + numkeys]
    if kind == _STREAMS:
        for i in range(1, len(command)):
            if _text(command[i]) == "STREAMS":
                rest = command[i + 1 :]
                return rest[: len(rest) // 2]
        return ()
    if kind == _SUB:
        return command[2:3]
    if kind == _ALL:
        return command[1:]
    if kind == _PAIR:
        return command[1::2]
    if kind == _BPOP:
        return command[1:-1]
    raise rex.RedisClusterException(
        f"{_text(command[0])} sees the keys of one Cluster node only: run it on each node of "
        "`await client.primaries()`"
    )


def slot_of(key: Arg) -> int:
    """The Cluster slot of a key (CRC16 of its hash tag), computed by the ``redis`` package."""
    if type(key) is str or type(key) is bytes:
        slot = _SLOT_CACHE.get(key)
        if slot is None:
            if len(_SLOT_CACHE) >= _SLOT_CACHE_SIZE:
                _SLOT_CACHE.clear()
            slot = _SLOT_CACHE[key] = key_slot(_key_bytes(key))
        return slot
    return key_slot(_key_bytes(key))


def command_slot(command: Command) -> int | None:
    """The one slot a command touches, None if keyless; a CROSSSLOT command fails loudly here."""
    if _kind(command) == _DEFAULT:  # the common case: one key, argument 1
        return slot_of(command[1]) if len(command) > 1 else None
    keys = command_keys(command)
    if not keys:
        return None
    slot = slot_of(keys[0])
    for key in keys[1:]:
        other = slot_of(key)
        if other != slot:
            raise rex.ClusterCrossSlotError(
                f"CROSSSLOT {_text(command[0])} touches keys in slots {slot} and {other} "
                f"({_key_bytes(keys[0])!r}, {_key_bytes(key)!r}): give them one hash tag"
            )
    return slot


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
    return {_text(flat[i]).lower(): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


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


class _NotSent(Exception):
    """Connecting to a node failed: nothing of the request was written, so it may be resent."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Budget:
    """Redirects and backoff of one request, bounded in count and in time."""

    def __init__(self, router: ClusterRouter) -> None:
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


class ClusterRouter:
    """Routes the requests of one ``Client`` over the nodes of a Redis Cluster."""

    def __init__(self, owner: Client) -> None:
        self.owner = owner
        config = owner.config
        self.seeds: list[Addr] = [(config.host, config.port), *config.cluster_nodes]
        self.map = SlotMap()
        self.pools: dict[Addr, Client] = {}
        self.stale = True
        self.refreshes = 0
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
        self.refreshes += 1
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

    # -- requests -------------------------------------------------------------------------

    async def execute(
        self, command: Command, timeout: float | None, script: Script | None = None
    ) -> Any:
        if self.stale:
            await self.refresh_quietly()
        slot = command_slot(command)
        if slot is None and command_name(command) in _EVERY_PRIMARY:
            return await self._everywhere(command, timeout)
        budget = _Budget(self)
        ask: Addr | None = None
        while True:
            addr = ask or self.owner_of(slot)
            if addr is None:
                await budget.backoff(rex.ClusterDownError(f"CLUSTERDOWN slot {slot} unassigned"))
                continue
            try:
                reply = await self._send(addr, command, ask is not None, timeout, script)
            except _NotSent as exc:
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
            elif isinstance(reply, _RETRYABLE):
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
        conn = await self._acquire(pool)
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

    async def _acquire(self, pool: Client) -> NodeConnection:
        try:
            return await pool._acquire()
        except (rex.AuthenticationError, rex.NoPermissionError):
            raise
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            raise _NotSent(exc) from exc

    async def _everywhere(self, command: Command, timeout: float | None) -> Any:
        replies = [await pool.execute(*command, timeout=timeout) for pool in await self.primaries()]
        return replies[0] if replies else None

    async def pipeline(self, commands: Sequence[Command], timeout: float | None) -> list[Any]:
        """Commands grouped per node, one round trip per node, replies in the callers' order."""
        if self.stale:
            await self.refresh_quietly()
        if _is_transaction(commands):
            return await self._transaction(commands, timeout)
        slots = [command_slot(c) for c in commands]
        anywhere = next((s for s in slots if s is not None), None)
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        asks: dict[int, Addr] = {}
        budget = _Budget(self)
        while pending:
            groups: dict[Addr, list[int]] = {}
            unrouted: list[int] = []
            owners = self.map.owners
            for i in pending:
                slot = slots[i]
                addr = asks.get(i) if asks else None
                if addr is None:
                    addr = owners[slot] if slot is not None else self.owner_of(anywhere)
                if addr is None:
                    unrouted.append(i)
                elif addr in groups:
                    groups[addr].append(i)
                else:
                    groups[addr] = [i]
            asked = set(asks)
            asks = {}
            outcomes = await self._send_groups(groups, asked, commands, timeout)
            again = unrouted
            reason: Exception | None = (
                rex.ClusterDownError("CLUSTERDOWN slot unassigned") if unrouted else None
            )
            for addr, indices in groups.items():
                outcome = outcomes[addr]
                if isinstance(outcome, _NotSent):
                    self.failed(addr)
                    again.extend(indices)
                    reason = outcome.cause
                    continue
                for i, reply in zip(indices, outcome, strict=True):
                    replies[i] = reply
                    if not isinstance(reply, _REDIRECTS):
                        continue
                    if isinstance(reply, rex.MovedError):
                        budget.redirected(reply)
                        self.moved(reply)
                        again.append(i)
                    elif isinstance(reply, rex.AskError):
                        budget.redirected(reply)
                        asks[i] = (reply.host, reply.port)
                        again.append(i)
                    elif isinstance(reply, _RETRYABLE):
                        again.append(i)
                        reason = reply
            pending = sorted(again)
            if pending and reason is not None:
                try:
                    await budget.backoff(reason)
                except _RETRYABLE:
                    return replies  # out of time: the refusals stay in place
        return replies

    async def _send_groups(
        self,
        groups: dict[Addr, list[int]],
        asked: set[int],
        commands: Sequence[Command],
        timeout: float | None,
    ) -> dict[Addr, list[Any] | _NotSent]:
        outcomes: dict[Addr, list[Any] | _NotSent] = {}
        lost: list[Exception] = []

        async def one(addr: Addr, indices: list[int]) -> None:
            batch: Sequence[Command]
            if asked:
                batch = []
                for i in indices:
                    if i in asked:
                        batch.append(("ASKING",))
                    batch.append(commands[i])
            elif len(indices) == len(commands):
                batch = commands
            else:
                batch = [commands[i] for i in indices]
            pool = self.pool(addr)
            try:
                conn = await self._acquire(pool)
            except _NotSent as exc:
                outcomes[addr] = exc
                return
            try:
                raw = await conn.pipeline(batch, timeout=timeout)
                if any(isinstance(r, UnblockedError) for r in raw):
                    conn.broken = True  # the server closes it after -UNBLOCKED
            except (rex.ConnectionError, rex.TimeoutError) as exc:
                self.failed(addr)
                lost.append(exc)
                return
            finally:
                pool._release(conn)
            if asked:
                out: list[Any] = []
                j = 0
                for i in indices:
                    j += 1 if i in asked else 0
                    out.append(raw[j])
                    j += 1
                outcomes[addr] = out
            else:
                outcomes[addr] = raw

        if len(groups) == 1:
            [(addr, indices)] = groups.items()
            await one(addr, indices)
        else:
            async with trio.open_nursery() as nursery:
                for addr, indices in groups.items():
                    nursery.start_soon(one, addr, indices)
        if lost:
            raise lost[0]  # written and then lost: which commands ran is unknown (never resent)
        return outcomes

    async def _transaction(self, commands: Sequence[Command], timeout: float | None) -> list[Any]:
        """A pipeline with WATCH/MULTI runs on one node as a whole; all its keys in one slot."""
        slot = _one_slot(commands)
        budget = _Budget(self)
        while True:
            addr = self.owner_of(slot)
            if addr is None:
                await budget.backoff(rex.ClusterDownError(f"CLUSTERDOWN slot {slot} unassigned"))
                continue
            pool = self.pool(addr)
            try:
                conn = await self._acquire(pool)
            except _NotSent as exc:
                self.stale = True
                await budget.backoff(exc.cause)
                continue
            try:
                replies = await conn.pipeline(commands, timeout=timeout)
            except (rex.ConnectionError, rex.TimeoutError):
                self.stale = True
                raise
            finally:
                # WATCH state must not leak to the next borrower of this pooled connection.
                if not conn.broken and any(_text(c[0]) == "WATCH" for c in commands):
                    conn.broken = True
                pool._release(conn)
            refusal = next((r for r in replies if isinstance(r, _REDIRECTS)), None)
            if refusal is None or not _proven_not_run(commands, replies):
                return replies
            if isinstance(refusal, rex.MovedError):
                budget.redirected(refusal)
                self.moved(refusal)
            else:  # ASK inside a transaction: wait for the migration to finish
                await budget.backoff(refusal)


_TRANSACTION = frozenset(
    form for name in ("MULTI", "WATCH") for form in (name, name.lower(), name.encode(),
                                                   name.lower().encode())
)


_STATEFUL = frozenset(
    form
    for name in ("MULTI", "WATCH", "EXEC", "DISCARD", "UNWATCH")
    for form in (name, name.lower(), name.encode(), name.lower().encode())
)


def _is_transaction(commands: Sequence[Command]) -> bool:
    for command in commands:
        name = command[0]
        if type(name) is str or type(name) is bytes:
            if name in _TRANSACTION:
                return True
        elif _text(name) in ("MULTI", "WATCH"):
            return True
    return False


def _one_slot(commands: Sequence[Command]) -> int | None:
    slot: int | None = None
    for command in commands:
        s = command_slot(command)
        if s is None:
            continue
        if slot is not None and s != slot:
            raise rex.ClusterCrossSlotError(
                f"CROSSSLOT a transaction touches slots {slot} and {s}: give its keys one hash tag"
            )
        slot = s
    return slot


def _proven_not_run(commands: Sequence[Command], replies: Sequence[Any]) -> bool:
    """True if no command of the request had an effect: each was refused by a redirect, or
    queued in a MULTI whose EXEC aborted (a queued command was refused), or is MULTI/WATCH."""
    in_multi = False
    for command, reply in zip(commands, replies, strict=True):
        name = _text(command[0])
        if name == "MULTI":
            in_multi = True
        elif name == "EXEC":
            in_multi = False
            if not isinstance(reply, rex.ExecAbortError):
                return False
        elif in_multi:
            if not (reply in (b"QUEUED", "QUEUED") or isinstance(reply, _REDIRECTS)):
                return False
        elif name != "WATCH" and not isinstance(reply, _REDIRECTS):
            return False
    return not in_multi


# -- slot-bound dedicated connections -----------------------------------------------------------


class SlotConnection:
    """A dedicated connection for one slot on a Cluster: same API as ``NodeConnection``.

    Opened lazily on the node that owns its slot; follows the slot when a reply proves it moved
    (nothing ran). A request cancelled or lost mid-way breaks it for good, as on one Redis.
    While WATCH or MULTI state is held, a redirect raises ``SlotMovedError`` instead.
    """

    def __init__(self, router: ClusterRouter, role: str, slot: int | None) -> None:
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

    async def execute(self, *args: Arg, timeout: float | None = math.inf) -> Any:
        reply = (await self._request([args], timeout))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def pipeline(
        self, commands: Sequence[Command], *, timeout: float | None = math.inf
    ) -> list[Any]:
        if not commands:
            return []
        return await self._request(commands, timeout)

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
                    f"{_text(command[0])} touches slot {slot}"
                )

    async def _open(self, budget: _Budget) -> NodeConnection:
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
        budget = _Budget(router)
        stateful = self._stateful or _is_transaction(commands)
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
            refused = [i for i, r in zip(pending, got, strict=True) if isinstance(r, _REDIRECTS)]
            if not refused:
                return replies
            first = replies[refused[0]]
            if stateful:
                ran = any(
                    _text(c[0]) == "EXEC" and isinstance(r, list)
                    for c, r in zip(batch, got, strict=True)
                )
                where = f"{self._addr[0]}:{self._addr[1]}" if self._addr else "?"
                await self._drop()
                router.stale = True
                raise SlotMovedError(
                    f"slot {self.slot} left {where} ({first}) while this connection held "
                    f"WATCH/MULTI state; {'the EXEC ran' if ran else 'no transaction ran'}",
                    replies,
                    ran,
                )
            pending = refused
            if isinstance(first, rex.MovedError):
                budget.redirected(first)
                router.moved(first)
                await self._drop()
            elif isinstance(first, rex.AskError):
                budget.redirected(first)
                asked = await self._ask(first, [commands[i] for i in pending], timeout)
                for i, reply in zip(pending, asked, strict=True):
                    replies[i] = reply
                pending = [i for i in pending if isinstance(replies[i], _REDIRECTS)]
                if not pending:
                    return replies
                await budget.backoff(replies[pending[0]])
            else:
                if isinstance(first, UnblockedError):
                    # The server closes the connection after -UNBLOCKED (a demoted primary).
                    await self._drop()
                await budget.backoff(first)
                if router.owner_of(self.slot) != self._addr:
                    await self._drop()

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
            name = _text(first)
            if name in ("WATCH", "MULTI") and not isinstance(reply, Exception):
                self._stateful = True
            elif name in ("EXEC", "DISCARD", "UNWATCH"):
                self._stateful = False


#: What ``Client.dedicated()`` yields: a plain connection on one Redis, a slot-bound one on a
#: Cluster. Both have ``execute``, ``pipeline`` and ``aclose`` with the same signatures.
Connection: TypeAlias = NodeConnection | SlotConnection
