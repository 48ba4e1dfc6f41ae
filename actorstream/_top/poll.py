"""Reading an app's state from Redis: a declarative query plan, run as one pipeline.

A refresh is a ``plan`` of named ``Query`` values (server TIME, the members, the recent events,
the leader lease, each known worker's status document, and per partition XINFO STREAM, XINFO
GROUPS and the dead letters' XLEN, per (actor, partition) the lease, the epoch and an XPENDING
summary). ``read`` runs it as one pipeline and parses the replies, by name, into a typed
``Reading``. It never writes.

When neither the app's code nor a live worker's telemetry gives the layout (``top APP`` with
no worker running), ``discover_layout`` finds the app's streams with SCAN and their actors from
their consumer groups, so the streams and their lengths still show.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from attrs import frozen

from .._core import keys as _keys
from .._core.replies import pairs, text
from .._core.status import StatusDocument, StatusFormatError, WorkerEvent
from .._transport import Arg, Client
from .model import (
    GroupRead,
    LayoutEntry,
    PartitionRead,
    Reading,
    RefreshCounts,
    SlotRead,
    Snapshot,
    StreamLayout,
    build_snapshot,
    stream_layouts,
)

__all__ = ["EVENTS_SHOWN", "Poller", "Query", "discover_layout", "plan", "read"]

EVENTS_SHOWN = 50
#: Re-reads in one refresh when the members or the layout changed under us.
MAX_ROUNDS = 3
#: Seconds between SCANs for the app's streams while no layout is known.
DISCOVERY_INTERVAL = 10.0


@frozen
class Query:
    """One command of a refresh, and the name its reply is read by."""

    name: Hashable
    command: tuple[Arg, ...]


def plan(app: str, workers: Sequence[str], streams: Sequence[StreamLayout]) -> tuple[Query, ...]:
    """The commands of one refresh, named: what is read is said once, here."""
    queries = [
        Query("time", ("TIME",)),
        Query("members", ("ZRANGE", _keys.members_key(app), 0, -1)),
        Query("events", ("LRANGE", _keys.events_key(app), 0, EVENTS_SHOWN - 1)),
        Query("leader", ("GET", _keys.leader_lease_key(app))),
    ]
    queries += [Query(("status", w), ("GET", _keys.status_key(app, w))) for w in workers]
    for s in streams:
        for p in range(s.partitions):
            key = _keys.stream_key(app, s.stream, p)
            queries += [
                Query(("info", s.stream, p), ("XINFO", "STREAM", key)),
                Query(("groups", s.stream, p), ("XINFO", "GROUPS", key)),
                Query(("dead", s.stream, p), ("XLEN", _keys.dlq_key(app, s.stream, p))),
            ]
            for a in s.actors:
                queries += [
                    Query(("lease", a, s.stream, p),
                          ("GET", _keys.lease_key(app, s.stream, p, a))),
                    Query(("epoch", a, s.stream, p),
                          ("GET", _keys.epoch_key(app, s.stream, p, a))),
                    Query(("pending", a, s.stream, p), ("XPENDING", key, a)),
                ]
    return tuple(queries)


async def run_plan(client: Client, queries: Sequence[Query]) -> dict[Hashable, Any]:
    replies = await client.pipeline([list(q.command) for q in queries])
    return {q.name: reply for q, reply in zip(queries, replies, strict=True)}


# -- reply parsing -------------------------------------------------------------------------------


def _ok(value: Any) -> bool:
    return value is not None and not isinstance(value, Exception)


def _int(value: Any) -> int | None:
    if not _ok(value):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _id_ms(entry_id: Any) -> int | None:
    try:
        return int(text(entry_id).split("-", 1)[0])
    except (TypeError, ValueError):
        return None


def _now(reply: Any) -> float:
    if isinstance(reply, list) and len(reply) == 2:
        return int(reply[0]) + int(reply[1]) / 1e6
    return time.time()


def _events(reply: Any) -> tuple[WorkerEvent, ...]:
    out: list[WorkerEvent] = []
    for raw in reply if isinstance(reply, list) else []:
        try:
            out.append(WorkerEvent.from_json(json.loads(raw)))
        except (ValueError, StatusFormatError):
            continue
    return tuple(out)


def _doc(worker: str, raw: Any) -> StatusDocument | None:
    if not _ok(raw):
        return None
    try:
        return StatusDocument.from_json(json.loads(raw), worker)
    except (ValueError, StatusFormatError):
        return None


def _partition(info: Any, groups: Any, dead: Any) -> PartitionRead:
    fields = pairs(info)
    length = _int(fields.get("length")) or 0
    added = _int(fields.get("entries-added"))
    by_name = {}
    for g in (pairs(x) for x in (groups if isinstance(groups, list) else [])):
        by_name[text(g.get("name"))] = GroupRead(
            _int(g.get("lag")), text(g.get("last-delivered-id", b"0-0"))
        )
    return PartitionRead(
        length=length, added=length if added is None else added,
        last_generated=text(fields.get("last-generated-id", b"0-0")),
        groups=by_name, dead_letters=_int(dead) or 0,
    )


def _slot(lease: Any, epoch: Any, pending: Any) -> SlotRead:
    count = first = None
    if isinstance(pending, list) and pending:
        count = _int(pending[0]) or 0
        first = _id_ms(pending[1]) if count else None
    return SlotRead(owner=text(lease) if _ok(lease) else None, epoch=_int(epoch),
                    pending=count or 0, oldest_pending_ms=first)


def parse(replies: Mapping[Hashable, Any], workers: Sequence[str],
          streams: Sequence[StreamLayout]) -> Reading:
    """The replies of ``plan(app, workers, streams)``, as a typed ``Reading``."""
    docs = {w: d for w in workers if (d := _doc(w, replies[("status", w)])) is not None}
    members = replies["members"]
    partitions = {}
    slots = {}
    for s in streams:
        for p in range(s.partitions):
            partitions[(s.stream, p)] = _partition(
                replies[("info", s.stream, p)], replies[("groups", s.stream, p)],
                replies[("dead", s.stream, p)],
            )
            for a in s.actors:
                slots[(a, s.stream, p)] = _slot(
                    replies[("lease", a, s.stream, p)], replies[("epoch", a, s.stream, p)],
                    replies[("pending", a, s.stream, p)],
                )
    leader = replies["leader"]
    return Reading(
        now=_now(replies["time"]), streams=tuple(streams),
        members=tuple(text(m) for m in members) if isinstance(members, list) else (),
        events=_events(replies["events"]), leader=text(leader) if _ok(leader) else None,
        docs=docs, partitions=partitions, slots=slots,
    )


async def read(client: Client, app: str, workers: Sequence[str],
               streams: Sequence[StreamLayout]) -> Reading:
    """One refresh: one pipeline, parsed."""
    return parse(await run_plan(client, plan(app, workers, streams)), workers, streams)


async def known_apps(client: Client, limit: int = 20) -> list[str]:
    """The names of the apps with streams in this Redis (for "no such app" messages)."""
    pattern = re.compile(r"^as:\{([^:{}]+):[^:{}]+:\d+\}:s$")
    apps: set[str] = set()
    for node in await client.primaries():
        cursor: Any = "0"
        while len(apps) < limit:
            cursor, keys = await node.execute(
                "SCAN", cursor, "MATCH", "as:{*}:s", "COUNT", 1000, "TYPE", "stream"
            )
            apps.update(m.group(1) for m in map(pattern.match, map(text, keys)) if m)
            if text(cursor) == "0":
                break
    return sorted(apps)[:limit]


async def discover_layout(client: Client, app: str) -> tuple[StreamLayout, ...]:
    """The app's streams (SCAN of every primary) and their actors (consumer groups), without
    its code."""
    pattern = re.compile(r"^as:\{" + re.escape(app) + r":([^:{}]+):(\d+)\}:s$")
    counts: dict[str, int] = {}
    for node in await client.primaries():  # a SCAN sees one node's keys: every primary's
        cursor: Any = "0"
        while True:
            cursor, keys = await node.execute(
                "SCAN", cursor, "MATCH", f"as:{{{app}:*:*}}:s", "COUNT", 1000, "TYPE", "stream"
            )
            for key in keys:
                match = pattern.match(text(key))
                if match:
                    name, p = match.group(1), int(match.group(2))
                    counts[name] = max(counts.get(name, 0), p + 1)
            if text(cursor) == "0":
                break
    names = sorted(counts)
    groups = await client.pipeline(
        [["XINFO", "GROUPS", _keys.stream_key(app, n, 0)] for n in names]
    )
    return tuple(
        StreamLayout(n, counts[n], tuple(sorted(
            text(pairs(g).get("name")) for g in (reply if isinstance(reply, list) else [])
        )))
        for n, reply in zip(names, groups, strict=True)
    )


def _layout_from(docs: Mapping[str, StatusDocument]) -> tuple[StreamLayout, ...]:
    seen = {(i.actor, i.stream): i.partitions for d in docs.values() for i in d.layout}
    return stream_layouts([LayoutEntry(a, s, n) for (a, s), n in sorted(seen.items())])


class Poller:
    """Reads snapshots of one app; keeps what the next refresh needs (workers, layout, counters).

    A refresh is one pipeline; a second (at most ``MAX_ROUNDS`` in all) runs only when the set
    of workers, or the layout learnt from their telemetry, changed since the last refresh.
    """

    def __init__(
        self, client: Client, app: str, layout: Sequence[LayoutEntry] | None = None, *,
        url: str = "",
    ) -> None:
        self.client = client
        self.app = app
        self.url = url
        self.fixed = stream_layouts(layout) if layout is not None else None
        self.streams: tuple[StreamLayout, ...] = self.fixed or ()
        self.known_workers: tuple[str, ...] = ()
        self._counters: RefreshCounts | None = None
        self._next_discovery = -math.inf
        self.pipelines = 0

    async def _read(self) -> tuple[Reading, bool]:
        """One refresh; True if it learnt that its question was out of date."""
        reading = await read(self.client, self.app, self.known_workers, self.streams)
        self.pipelines += 1
        changed = reading.members != self.known_workers
        self.known_workers = reading.members
        if self.fixed is None:
            streams = _layout_from(reading.docs) or self.streams
            if not streams and reading.now >= self._next_discovery:
                # A SCAN of the keyspace: not on every refresh while nothing is found.
                self._next_discovery = reading.now + DISCOVERY_INTERVAL
                streams = await discover_layout(self.client, self.app)
            changed = changed or streams != self.streams
            self.streams = streams
        return reading, changed

    async def poll(self) -> Snapshot:
        reading, changed = await self._read()
        rounds = 1
        while changed and rounds < MAX_ROUNDS:
            reading, changed = await self._read()
            rounds += 1
        # Still moving? These replies are consistent with what they asked.
        snapshot, self._counters = build_snapshot(
            reading, self._counters, app=self.app, url=self.url
        )
        return snapshot
