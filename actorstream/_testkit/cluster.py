"""``RedisCluster``: a real Redis Cluster of ``redis-server`` processes, for tests.

Formed the fast way (no ``redis-cli --cluster create``, no sleeps): every node starts with
``--cluster-enabled yes`` on free ports, the primaries get their slot ranges with
``CLUSTER ADDSLOTSRANGE`` and distinct config epochs, all nodes ``CLUSTER MEET`` the first one,
replicas ``CLUSTER REPLICATE`` their primary, and the cluster is ready when every node reports
``cluster_state:ok`` (and every replica's link is up). Three primaries start in well under a
second on an idle machine::

    with RedisCluster(primaries=3, replicas=1) as cluster:
        url = cluster.url                       # any node; the client finds the others
        primary = cluster.owner_of(slot_of("as:{app:orders:3}:s"))
        primary.kill()                           # kill -9
        promoted = cluster.wait_promoted(cluster.replicas_of(primary)[0])
        cluster.move_slot(5, cluster.primaries[1])   # live: IMPORTING/MIGRATING, MIGRATE, NODE

Self-contained (it shares no process code with ``RedisServer``) and blocking: every wait is short
and bounded, so it can be called from trio tests too (or through ``trio.to_thread``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from .._servers.process import Managed
from .cluster_node import (
    SLOTS,
    START_TIMEOUT,
    ClusterNode,
    CommandError,
    PortTaken,
    find_cluster_binary,
    free_ports,
)

__all__ = ["ClusterNode", "RedisCluster", "SlotMove"]


class SlotMove:
    """A live slot migration in steps (for tests that want to act between them)."""

    def __init__(self, cluster: RedisCluster, slot: int, source: ClusterNode, target: ClusterNode):
        self.cluster = cluster
        self.slot = slot
        self.source = source
        self.target = target
        self.moved_keys = 0

    def begin(self) -> Self:
        """SETSLOT IMPORTING on the target, then MIGRATING on the source (the documented order)."""
        self.target.call("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.source.id)
        self.source.call("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.target.id)
        return self

    def migrate(self, batch: int = 100, limit: int | None = None) -> int:
        """MIGRATE keys of the slot from source to target; returns how many moved."""
        moved = 0
        while limit is None or moved < limit:
            count = batch if limit is None else min(batch, limit - moved)
            keys = self.source.call("CLUSTER", "GETKEYSINSLOT", self.slot, count)
            if not keys:
                break
            self.source.call(
                "MIGRATE", self.target.host, self.target.port, "", 0, 10_000, "KEYS", *keys,
                timeout=15.0,
            )  # fmt: skip
            moved += len(keys)
        self.moved_keys += moved
        return moved

    def finish(self) -> None:
        """SETSLOT NODE on the target, the source, then every other primary."""
        self.migrate()
        order = [self.target, self.source] + [
            n for n in self.cluster.primaries if n not in (self.target, self.source)
        ]
        for node in order:
            if node.running and not node.paused:
                node.call("CLUSTER", "SETSLOT", self.slot, "NODE", self.target.id)


class RedisCluster(Managed):
    """N primaries (+ replicas each) of ``redis-server --cluster-enabled yes`` on free ports.

    ``node_timeout_ms`` (``cluster-node-timeout``) sets how fast a dead primary is detected and
    its replica promoted (about two to three times it). ``appendonly`` turns on AOF everysec on
    every node. ``extra_args`` go to every node's command line.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 0,
        *,
        node_timeout_ms: int = 1000,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        if primaries < 1:
            raise ValueError("a cluster needs at least one primary")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if primaries > SLOTS:
            raise ValueError(f"at most {SLOTS} primaries")
        self.n_primaries = primaries
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)
        self.binary = binary or find_cluster_binary()
        self.nodes: list[ClusterNode] = []
        self._dir: Path | None = None
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        if self._started:
            raise RuntimeError("this RedisCluster was started already")
        self._started = True
        self._dir = Path(tempfile.mkdtemp(prefix="actorstream-cluster-"))
        try:
            self._form(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _form(self, timeout: float) -> None:
        assert self._dir is not None
        total = self.n_primaries * (1 + self.n_replicas)
        ports = free_ports(2 * total)
        args = [
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--repl-diskless-sync-delay", "0",
            "--enable-debug-command", "local",
            *self.extra_args,
        ]  # fmt: skip
        for i in range(total):
            self.nodes.append(self._start_node(ports[2 * i], ports[2 * i + 1], args, timeout))
        primaries = self.nodes[: self.n_primaries]
        per = SLOTS // len(primaries)
        for i, node in enumerate(primaries):
            start = i * per
            end = SLOTS - 1 if i == len(primaries) - 1 else start + per - 1
            node.call("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            node.call("CLUSTER", "ADDSLOTSRANGE", start, end)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.call("CLUSTER", "MEET", first.host, first.port, first.bus_port)
        deadline = time.monotonic() + timeout
        self._wait(lambda: all(self._knows_all(n) for n in self.nodes), deadline, "gossip")
        replicas = self.nodes[self.n_primaries :]
        for i, replica in enumerate(replicas):
            replica.call("CLUSTER", "REPLICATE", primaries[i % len(primaries)].id)
        self.wait_ok(max(0.1, deadline - time.monotonic()))

    def _start_node(self, port: int, bus_port: int, args: list[str], timeout: float) -> ClusterNode:
        """Start a node; if another process took a probed port meanwhile (tests run in parallel),
        try fresh ports a few times."""
        assert self._dir is not None
        for _ in range(4):
            node = ClusterNode(self.binary, port, bus_port, args, self._dir)
            try:
                node.start(timeout)
                return node
            except PortTaken:
                node.close()
                port, bus_port = free_ports(2)
        node = ClusterNode(self.binary, port, bus_port, args, self._dir)
        node.start(timeout)
        return node

    def _knows_all(self, node: ClusterNode) -> bool:
        listing = node.call("CLUSTER", "NODES").decode()
        ids = {line.split()[0] for line in listing.splitlines() if line.strip()}
        return all(n.id in ids for n in self.nodes) and "handshake" not in listing

    def _wait(self, predicate: Any, deadline: float, what: str) -> None:
        while True:
            try:
                if predicate():
                    return
            except (OSError, CommandError):
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- :{n.port}\n{n.log()[-800:]}" for n in self.nodes)
                raise RuntimeError(f"Redis Cluster not ready ({what}) in time\n{logs}")
            time.sleep(0.01)

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running node says ``cluster_state:ok``, agrees on all 16384 slots
        and every running replica's link to its primary is up."""
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            for node in self.nodes:
                if not node.running or node.paused:
                    continue
                state = node.call("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in state or "cluster_slots_ok:16384" not in state:
                    return False
                repl = node.info("replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            return self._agree()

        self._wait(ready, deadline, "cluster_state:ok")

    def _agree(self) -> bool:
        """Every running node has the same slot owners (gossip has settled)."""
        views = {
            tuple(sorted(self._owners_from(node).items()))
            for node in self.nodes
            if node.running and not node.paused
        }
        return len(views) == 1

    def _owners_from(self, node: ClusterNode) -> dict[int, int]:
        """First slot of each range -> owner port, as ``node`` sees it."""
        out: dict[int, int] = {}
        for entry in node.call("CLUSTER", "SLOTS"):
            out[int(entry[0])] = int(entry[2][1])
        return out

    def close(self) -> None:
        """Kill every node, reap it and delete all directories. Idempotent."""
        for node in self.nodes:
            node.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    stop = close

    # -- topology -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A plain URL to the first node; clients find the rest with CLUSTER SHARDS."""
        return self.nodes[0].url

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def _viewer(self) -> ClusterNode:
        for node in self.nodes:
            if node.running and not node.paused:
                return node
        raise RuntimeError("no node of the cluster is running")

    @property
    def primaries(self) -> list[ClusterNode]:
        """The nodes that serve slots now (as a running node sees it)."""
        owners = set(self._owners_from(self._viewer()).values())
        return [n for n in self.nodes if n.port in owners]

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        listing = self._viewer().call("CLUSTER", "NODES").decode()
        ids = [
            parts[0]
            for parts in (line.split() for line in listing.splitlines())
            if len(parts) > 3 and parts[3] == primary.id
        ]
        return [n for n in self.nodes if n.id in ids]

    def owner_of(self, slot: int) -> ClusterNode:
        for entry in self._viewer().call("CLUSTER", "SLOTS"):
            if int(entry[0]) <= slot <= int(entry[1]):
                return self.node(int(entry[2][1]))
        raise RuntimeError(f"slot {slot} is not served")

    # -- faults and operations -----------------------------------------------------------

    def failover(
        self, replica: ClusterNode, mode: str | None = None, timeout: float = 20.0
    ) -> None:
        """``CLUSTER FAILOVER [FORCE|TAKEOVER]`` on a replica; waits until it is a primary and
        the cluster is ok again."""
        args = ["CLUSTER", "FAILOVER"] + ([mode] if mode else [])
        replica.call(*args)
        self.wait_promoted(replica, timeout)

    def wait_promoted(self, replica: ClusterNode, timeout: float = 20.0) -> float:
        """Wait until ``replica`` is a primary and the cluster is ok; returns seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        self._wait(lambda: replica.is_primary, deadline, f"promotion of :{replica.port}")
        self._wait(
            lambda: replica.port in {n.port for n in self.primaries}, deadline, "slots handed over"
        )
        self.wait_ok(max(0.1, deadline - time.monotonic()))
        return time.monotonic() - started

    def begin_move(self, slot: int, target: ClusterNode) -> SlotMove:
        """Start moving ``slot`` to ``target``: returns the ``SlotMove`` to step through."""
        source = self.owner_of(slot)
        if source is target:
            raise ValueError(f"slot {slot} is on :{target.port} already")
        return SlotMove(self, slot, source, target).begin()

    def move_slots(self, slots: Sequence[int], target: ClusterNode) -> int:
        """Move many slots live to ``target``, keys and all; returns how many keys moved.

        Resharding a third of a cluster slot by slot costs tens of thousands of round trips;
        this takes a few per node: IMPORTING on the target and MIGRATING on each source for
        all of its slots at once, MIGRATE for the slots that hold keys (in the documented
        order, so clients see ASK, then MOVED), then NODE on the target, the sources and the
        other primaries.
        """
        ranges = [
            (int(entry[0]), int(entry[1]), self.node(int(entry[2][1])))
            for entry in self._viewer().call("CLUSTER", "SLOTS")
        ]
        by_source: dict[int, list[int]] = {}
        for slot in slots:
            owner = next(node for lo, hi, node in ranges if lo <= slot <= hi)
            if owner is not target:
                by_source.setdefault(owner.port, []).append(slot)
        moved = 0
        for port, group in by_source.items():
            source = self.node(port)
            target.pipeline([("CLUSTER", "SETSLOT", s, "IMPORTING", source.id) for s in group])
            source.pipeline([("CLUSTER", "SETSLOT", s, "MIGRATING", target.id) for s in group])
            counts = source.pipeline([("CLUSTER", "COUNTKEYSINSLOT", s) for s in group])
            for slot, count in zip(group, counts, strict=True):
                if count:
                    moved += SlotMove(self, slot, source, target).migrate()
            others = [n for n in self.primaries if n not in (target, source)]
            for node in [target, source, *others]:
                if node.running and not node.paused:
                    node.pipeline([("CLUSTER", "SETSLOT", s, "NODE", target.id) for s in group])
        return moved

    def move_slot(self, slot: int, target: ClusterNode) -> int:
        """Move a slot live, keys and all; returns how many keys moved."""
        move = self.begin_move(slot, target)
        move.finish()
        return move.moved_keys
