"""`actorstream top` and `status`: read an app's state from Redis, and render it with rich.

Reading (``Poller``) costs one pipeline per refresh whatever the event rate: server TIME, the
members, the recent events, the leader lease, every live worker's telemetry document, and per
partition XINFO STREAM, XINFO GROUPS, XLEN of its dead letters, and per (actor, partition) the
lease, the epoch and an XPENDING summary. A second pipeline runs only when the set of workers
(or, for ``top APP``, the layout) changed since the last refresh. It never writes.

Rendering is pure: ``render_*`` functions take a ``Snapshot`` and return rich renderables, so
each panel is tested on a recording console.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import attrs
from attrs import frozen
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._core import keys as _keys
from ._transport import Client

ACTIVE_STATES = ("starting", "replaying", "running", "draining", "waiting-redis")
EVENTS_SHOWN = 50


# -- the model ---------------------------------------------------------------------------------


@frozen
class LayoutEntry:
    actor: str
    stream: str
    partitions: int


@frozen
class WorkerView:
    worker_id: str
    host: str
    pid: int
    uptime: float
    heartbeat_age: float | None
    partitions: int
    processed: int
    rate: float | None
    restarts: int
    dead_lettered: int
    last_error: str | None
    member: bool
    handler_p50: float | None = None
    handler_p99: float | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"


@frozen
class PartitionView:
    actor: str
    stream: str
    partition: int
    owner: str | None
    owner_label: str | None
    epoch: int | None
    state: str
    lag: int | None
    pending: int
    oldest_pending_age: float | None
    processed: int | None
    rate: float | None
    restarts: int
    dead_letters: int
    last_error: str | None

    @property
    def label(self) -> str:
        return f"{self.actor}[{self.partition}]"


@frozen
class StreamView:
    stream: str
    partitions: int
    length: int
    appended: int
    appended_rate: float | None
    processed_rate: float | None
    lag: int | None
    pending: int
    dead_letters: int


@frozen
class CoordinatorView:
    leader: str | None
    members: int
    rebalances: int
    last_rebalance_age: float | None
    unowned: int
    last_error: str | None


@frozen
class EventView:
    t: float
    kind: str
    msg: str
    worker: str


@frozen
class Snapshot:
    app: str
    url: str
    taken_at: float
    workers: tuple[WorkerView, ...]
    partitions: tuple[PartitionView, ...]
    streams: tuple[StreamView, ...]
    coordinator: CoordinatorView
    events: tuple[EventView, ...]
    layout_known: bool = True

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


# -- reading Redis -------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pairs(flat: Any) -> dict[str, Any]:
    if not isinstance(flat, list):
        return {}
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _int(value: Any, default: int | None = None) -> int | None:
    if value is None or isinstance(value, Exception):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _id_ms(entry_id: Any) -> int | None:
    try:
        return int(_text(entry_id).split("-", 1)[0])
    except (TypeError, ValueError):
        return None


class Poller:
    """Reads snapshots of one app; keeps the previous raw counters to compute rates."""

    def __init__(
        self, client: Client, app: str, layout: Sequence[LayoutEntry] | None = None, *,
        url: str = "",
    ) -> None:
        self.client = client
        self.app = app
        self.url = url
        self.fixed_layout = tuple(layout) if layout is not None else None
        self.layout: tuple[LayoutEntry, ...] = self.fixed_layout or ()
        self.known_workers: tuple[str, ...] = ()
        self._asked_workers: tuple[str, ...] = ()
        self._asked_layout: tuple[LayoutEntry, ...] = ()
        self._prev_time: float | None = None
        self._prev_processed: dict[tuple[str, str, int], int] = {}
        self._prev_appended: dict[str, int] = {}
        self.pipelines = 0

    def _commands(self) -> list[list[Any]]:
        """The refresh pipeline; remembers the workers and layout it asked about."""
        app = self.app
        self._asked_workers = self.known_workers
        self._asked_layout = self.layout
        cmds: list[list[Any]] = [
            ["TIME"],
            ["ZRANGE", _keys.members_key(app), 0, -1, "WITHSCORES"],
            ["LRANGE", _keys.events_key(app), 0, EVENTS_SHOWN - 1],
            ["GET", _keys.leader_lease_key(app)],
        ]
        if self.known_workers:
            cmds.append(["MGET", *(_keys.status_key(app, w) for w in self.known_workers)])
        for stream, parts, actors in self._streams(self.layout):
            for p in range(parts):
                key = _keys.stream_key(app, stream, p)
                cmds.append(["XINFO", "STREAM", key])
                cmds.append(["XINFO", "GROUPS", key])
                cmds.append(["XLEN", _keys.dlq_key(app, stream, p)])
                for actor in actors:
                    cmds.append(["GET", _keys.lease_key(app, stream, p, actor)])
                    cmds.append(["GET", _keys.epoch_key(app, stream, p, actor)])
                    cmds.append(["XPENDING", key, actor])
        return cmds

    def _streams(self, layout: Sequence[LayoutEntry]) -> list[tuple[str, int, list[str]]]:
        out: dict[str, tuple[int, list[str]]] = {}
        for entry in layout:
            _parts, actors = out.setdefault(entry.stream, (entry.partitions, []))
            actors.append(entry.actor)
        return [(s, p, a) for s, (p, a) in out.items()]

    async def poll(self) -> Snapshot:
        replies = await self.client.pipeline(self._commands())
        self.pipelines += 1
        members = self._members(replies[1])
        docs = self._docs(replies[4]) if self._asked_workers else {}
        changed = tuple(members) != self.known_workers
        self.known_workers = tuple(members)
        if self.fixed_layout is None:
            layout = self._layout_from(docs) or self.layout
            if layout != self.layout:
                self.layout = layout
                changed = True
        rounds = 0
        while changed and rounds < 3:
            # Workers joined or left (or the layout showed up): read again, now complete.
            rounds += 1
            replies = await self.client.pipeline(self._commands())
            self.pipelines += 1
            docs = self._docs(replies[4]) if self._asked_workers else {}
            members = self._members(replies[1])
            changed = tuple(members) != self.known_workers
            self.known_workers = tuple(members)
            if self.fixed_layout is None:
                layout = self._layout_from(docs) or self.layout
                if layout != self.layout:
                    self.layout = layout
                    changed = True
        # Still moving after three reads? These replies are consistent with what they asked.
        return self._build(replies, members, docs)

    def _members(self, reply: Any) -> list[str]:
        if not isinstance(reply, list):
            return []
        return [_text(reply[i]) for i in range(0, len(reply) - 1, 2)]

    def _docs(self, reply: Any) -> dict[str, dict[str, Any]]:
        docs: dict[str, dict[str, Any]] = {}
        if not isinstance(reply, list):
            return docs
        for worker, raw in zip(self._asked_workers, reply, strict=False):
            if raw is None or isinstance(raw, Exception):
                continue
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict):
                docs[worker] = doc
        return docs

    def _layout_from(self, docs: dict[str, dict[str, Any]]) -> tuple[LayoutEntry, ...]:
        seen: dict[tuple[str, str], int] = {}
        for doc in docs.values():
            for item in doc.get("layout") or []:
                try:
                    seen[(str(item["actor"]), str(item["stream"]))] = int(item["partitions"])
                except (KeyError, TypeError, ValueError):
                    continue
        return tuple(LayoutEntry(a, s, n) for (a, s), n in sorted(seen.items()))

    def _build(
        self, replies: list[Any], members: list[str], docs: dict[str, dict[str, Any]]
    ) -> Snapshot:
        time_reply = replies[0]
        now = (
            int(time_reply[0]) + int(time_reply[1]) / 1e6
            if isinstance(time_reply, list)
            else time.time()
        )
        events = self._events(replies[2])
        leader_raw = replies[3]
        leader = None if leader_raw is None or isinstance(leader_raw, Exception) else _text(
            leader_raw
        )
        dt = None if self._prev_time is None else now - self._prev_time
        labels = {
            w: f"{d.get('host', '?')}:{d.get('pid', '?')}" for w, d in docs.items()
        }
        # Each worker's counters per (actor, partition).
        counters: dict[tuple[str, str, int], dict[str, Any]] = {}
        for w, doc in docs.items():
            for part in doc.get("partitions") or []:
                counters[(w, str(part.get("actor")), int(part.get("partition", -1)))] = part
        processed_now = {k: int(v.get("processed") or 0) for k, v in counters.items()}
        rates: dict[tuple[str, str, int], float] = {}
        if dt is not None and dt > 0:
            for k, value in processed_now.items():
                prev = self._prev_processed.get(k)
                if prev is not None:
                    rates[k] = max(0, value - prev) / dt

        i = 5 if self._asked_workers else 4
        partitions: list[PartitionView] = []
        streams: list[StreamView] = []
        appended_now: dict[str, int] = {}
        for stream, parts, actors in self._streams(self._asked_layout):
            s_len = s_appended = s_pending = s_dlq = 0
            s_lag: int | None = 0
            for p in range(parts):
                info = _pairs(replies[i])
                groups = replies[i + 1]
                dlq = _int(replies[i + 2], 0) or 0
                i += 3
                length = _int(info.get("length"), 0) or 0
                added = _int(info.get("entries-added"))
                if added is None:
                    added = length
                last_generated = _text(info.get("last-generated-id", b"0-0"))
                group_info = {
                    _text(g.get("name")): g
                    for g in (_pairs(x) for x in (groups if isinstance(groups, list) else []))
                }
                s_len += length
                s_appended += added
                s_dlq += dlq
                for n, actor in enumerate(actors):
                    lease = replies[i]
                    epoch = _int(replies[i + 1])
                    pending_reply = replies[i + 2]
                    i += 3
                    owner = None if lease is None or isinstance(lease, Exception) else _text(
                        lease
                    )
                    g = group_info.get(actor)
                    lag = self._lag(g, length, last_generated)
                    pending = 0
                    oldest_age = None
                    if isinstance(pending_reply, list) and pending_reply:
                        pending = _int(pending_reply[0], 0) or 0
                        first_ms = _id_ms(pending_reply[1]) if pending else None
                        if first_ms is not None:
                            oldest_age = max(0.0, now - first_ms / 1000)
                    part = counters.get((owner, actor, p)) if owner else None
                    state = "unowned" if owner is None else (
                        str(part.get("state")) if part else "no telemetry"
                    )
                    rate = rates.get((owner, actor, p)) if owner else None
                    partitions.append(
                        PartitionView(
                            actor=actor,
                            stream=stream,
                            partition=p,
                            owner=owner,
                            owner_label=labels.get(owner, owner) if owner else None,
                            epoch=epoch,
                            state=state,
                            lag=lag,
                            pending=pending,
                            oldest_pending_age=oldest_age,
                            processed=int(part.get("processed") or 0) if part else None,
                            rate=rate,
                            restarts=int(part.get("restarts") or 0) if part else 0,
                            dead_letters=dlq if n == 0 else 0,
                            last_error=part.get("last_error") if part else None,
                        )
                    )
                    s_pending += pending
                    if lag is None or s_lag is None:
                        s_lag = None
                    else:
                        s_lag += lag
            appended_now[stream] = s_appended
            prev_added = self._prev_appended.get(stream)
            appended_rate = (
                max(0, s_appended - prev_added) / dt
                if dt and dt > 0 and prev_added is not None
                else None
            )
            processed_rate = (
                sum(r for (_w, a, _p), r in rates.items() if a in actors)
                if dt and dt > 0
                else None
            )
            streams.append(
                StreamView(
                    stream=stream,
                    partitions=parts,
                    length=s_len,
                    appended=s_appended,
                    appended_rate=appended_rate,
                    processed_rate=processed_rate,
                    lag=s_lag,
                    pending=s_pending,
                    dead_letters=s_dlq,
                )
            )

        workers: list[WorkerView] = []
        for w in sorted(set(members) | set(docs)):
            doc = docs.get(w, {})
            parts_of = [
                pt for pt in doc.get("partitions") or [] if pt.get("state") in ACTIVE_STATES
            ]
            worker_rate = (
                sum(r for (ww, _a, _p), r in rates.items() if ww == w) if rates or dt else None
            )
            published = doc.get("published_at")
            workers.append(
                WorkerView(
                    worker_id=w,
                    host=str(doc.get("host", w)),
                    pid=int(doc.get("pid", 0) or 0),
                    uptime=float(doc.get("uptime", 0.0) or 0.0),
                    heartbeat_age=max(0.0, now - float(published)) if published else None,
                    partitions=len(parts_of),
                    processed=sum(int(pt.get("processed") or 0)
                                  for pt in doc.get("partitions") or []),
                    rate=worker_rate,
                    restarts=int((doc.get("supervisor") or {}).get("restarts", 0) or 0),
                    dead_lettered=int(doc.get("dead_lettered", 0) or 0),
                    last_error=(doc.get("coordinator") or {}).get("last_error"),
                    member=w in members,
                    handler_p50=_worst(doc, "handler_p50"),
                    handler_p99=_worst(doc, "handler_p99"),
                )
            )

        last_rebalance = max(
            (
                float(t)
                for d in docs.values()
                if (t := (d.get("coordinator") or {}).get("last_rebalance_wall")) is not None
            ),
            default=None,
        )
        coordinator = CoordinatorView(
            leader=labels.get(leader, leader) if leader else None,
            members=len(members),
            rebalances=sum(
                int((d.get("coordinator") or {}).get("rebalances", 0) or 0) for d in docs.values()
            ),
            last_rebalance_age=None if last_rebalance is None else max(0.0, now - last_rebalance),
            unowned=sum(1 for pv in partitions if pv.owner is None),
            last_error=next(
                (
                    str(e)
                    for d in docs.values()
                    if (e := (d.get("coordinator") or {}).get("last_error"))
                ),
                None,
            ),
        )
        self._prev_time = now
        self._prev_processed = processed_now
        self._prev_appended = appended_now
        return Snapshot(
            app=self.app,
            url=self.url,
            taken_at=now,
            workers=tuple(workers),
            partitions=tuple(partitions),
            streams=tuple(streams),
            coordinator=coordinator,
            events=tuple(events),
            layout_known=bool(self._asked_layout),
        )

    @staticmethod
    def _lag(group: dict[str, Any] | None, length: int, last_generated: str) -> int | None:
        """XINFO GROUPS lag (Redis 7); else 0 if all delivered, the length if none, else None."""
        if group is None:
            return length
        lag = _int(group.get("lag"))
        if lag is not None:
            return lag
        last_delivered = _text(group.get("last-delivered-id", b"0-0"))
        if last_delivered == last_generated:
            return 0
        if last_delivered == "0-0":
            return length
        return None

    @staticmethod
    def _events(reply: Any) -> list[EventView]:
        out: list[EventView] = []
        if not isinstance(reply, list):
            return out
        for raw in reply:
            try:
                item = json.loads(raw)
                out.append(
                    EventView(
                        t=float(item["t"]),
                        kind=str(item["kind"]),
                        msg=str(item["msg"]),
                        worker=str(item.get("worker", "")),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return out


# -- rendering -------------------------------------------------------------------------------


@attrs.define
class ViewOptions:
    """What the keyboard changes: sort order, filter, page."""

    sort: str = "partition"
    reverse: bool = False
    filter: str = "all"  # all | problems | text filter
    page: int = 0


SORTS = ("partition", "lag", "pending", "rate", "restarts", "dlq", "owner")
FILTERS = ("all", "problems")


def _worst(doc: dict[str, Any], field: str) -> float | None:
    """The worst (highest) handler latency percentile over a worker's partitions."""
    values = [float(p[field]) for p in doc.get("partitions") or [] if p.get(field) is not None]
    return max(values) if values else None


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_age(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds > 0 else "0s"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def fmt_int(value: int | None) -> str:
    if value is None:
        return "?"
    if value < 100_000:
        return str(value)
    if value < 10_000_000:
        return f"{value / 1000:.0f}k"
    return f"{value / 1_000_000:.0f}M"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}"
    if value < 100_000:
        return f"{value:.0f}"
    return f"{value / 1000:.0f}k"


STATE_STYLE = {
    "running": "green",
    "replaying": "cyan",
    "starting": "cyan",
    "draining": "yellow",
    "waiting-redis": "yellow",
    "unowned": "bold red",
    "group-lost": "bold red",
    "fenced": "red",
    "failed": "bold red",
    "stopped": "dim",
    "no telemetry": "yellow",
}


def _table(*columns: tuple[str, str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), expand=False,
                  show_edge=False)
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return table


def render_header(snap: Snapshot, options: ViewOptions | None = None,
                  *, keys: bool = False) -> Text:
    clock = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    text = Text.assemble(
        ("actorstream top", "bold"),
        f"  app {snap.app}  ",
        (snap.url, "dim"),
        f"  {clock}",
        no_wrap=True,
        overflow="ellipsis",
    )
    if keys and options is not None:
        text.append(
            f"  sort:{options.sort}{'-' if options.reverse else ''} filter:{options.filter}",
            "dim",
        )
    return text


def render_streams(snap: Snapshot) -> Table:
    table = _table(("STREAM", "left"), ("PARTS", "right"), ("APPENDED/S", "right"),
                   ("PROCESSED/S", "right"), ("LENGTH", "right"), ("LAG", "right"),
                   ("PENDING", "right"), ("DEAD", "right"))
    for s in snap.streams:
        table.add_row(s.stream, str(s.partitions), fmt_rate(s.appended_rate),
                      fmt_rate(s.processed_rate), fmt_int(s.length), fmt_int(s.lag),
                      fmt_int(s.pending), fmt_int(s.dead_letters))
    return table


def render_coordinator(snap: Snapshot) -> Text:
    c = snap.coordinator
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("coordinator: ", "bold")
    text.append(f"leader {c.leader or 'none'} · members {c.members} · ")
    text.append(f"last rebalance {fmt_age(c.last_rebalance_age)}")
    text.append(" ago" if c.last_rebalance_age is not None else "")
    text.append(" · unowned ")
    text.append(str(c.unowned), "bold red" if c.unowned else "green")
    if c.last_error:
        text.append(f" · error: {c.last_error}", "red")
    return text


def render_workers(snap: Snapshot, limit: int | None = None) -> Table:
    table = _table(("WORKER", "left"), ("BEAT", "right"), ("PARTS", "right"),
                   ("RATE/S", "right"), ("DONE", "right"), ("RESTARTS", "right"),
                   ("P99 MS", "right"), ("UP", "right"), ("STATUS", "left"))
    rows = snap.workers if limit is None else snap.workers[:limit]
    for w in rows:
        stale = w.heartbeat_age is None or w.heartbeat_age > 5
        status = "ok" if w.member and not stale else ("left" if not w.member else "stale")
        table.add_row(
            w.label[:20], fmt_age(w.heartbeat_age), str(w.partitions), fmt_rate(w.rate),
            fmt_int(w.processed), str(w.restarts), fmt_ms(w.handler_p99), fmt_age(w.uptime),
            Text(status, "green" if status == "ok" else "yellow"),
        )
    if limit is not None and len(snap.workers) > limit:
        table.add_row(f"... {len(snap.workers) - limit} more", *[""] * 8)
    if not snap.workers:
        table.add_row(Text("no live workers", "yellow"), *[""] * 8)
    return table


def _is_problem(p: PartitionView) -> bool:
    return (
        p.state != "running"
        or bool(p.lag)
        or p.pending > 0
        or p.restarts > 0
        or p.dead_letters > 0
    )


def select_partitions(snap: Snapshot, options: ViewOptions) -> list[PartitionView]:
    parts = list(snap.partitions)
    if options.filter == "problems":
        parts = [p for p in parts if _is_problem(p)]
    elif options.filter not in FILTERS:
        needle = options.filter.lower()
        parts = [
            p for p in parts
            if needle in p.label.lower() or needle in (p.owner_label or "").lower()
            or needle in p.state.lower()
        ]
    keys = {
        "partition": lambda p: (p.actor, p.stream, p.partition),
        "lag": lambda p: (p.lag or 0, p.label),
        "pending": lambda p: (p.pending, p.label),
        "rate": lambda p: (p.rate or 0.0, p.label),
        "restarts": lambda p: (p.restarts, p.label),
        "dlq": lambda p: (p.dead_letters, p.label),
        "owner": lambda p: (p.owner_label or "", p.label),
    }
    descending = options.sort not in ("partition", "owner")
    parts.sort(key=keys.get(options.sort, keys["partition"]),
               reverse=descending != options.reverse)
    return parts


def render_partitions(
    snap: Snapshot, options: ViewOptions | None = None, limit: int | None = None
) -> Table:
    options = options or ViewOptions()
    parts = select_partitions(snap, options)
    pages = 1
    if limit is not None and limit > 0 and len(parts) > limit:
        pages = math.ceil(len(parts) / limit)
        options.page = min(options.page, pages - 1)
        parts = parts[options.page * limit : (options.page + 1) * limit]
    table = _table(("PARTITION", "left"), ("OWNER", "left"), ("EP", "right"),
                   ("STATE", "left"), ("LAG", "right"), ("PEND", "right"), ("OLDEST", "right"),
                   ("RATE/S", "right"), ("RST", "right"), ("DLQ", "right"))
    table.columns[0].max_width = 12
    table.columns[1].max_width = 14
    table.columns[1].overflow = "ellipsis"
    table.columns[3].max_width = 13
    if pages > 1:
        table.caption = f"page {options.page + 1}/{pages} (n/p)"
    for p in parts:
        table.add_row(
            p.label[:12],
            (p.owner_label or "-")[:14],
            "-" if p.epoch is None else str(p.epoch),
            Text(p.state, STATE_STYLE.get(p.state, "")),
            fmt_int(p.lag),
            fmt_int(p.pending),
            fmt_age(p.oldest_pending_age) if p.pending else "-",
            fmt_rate(p.rate),
            str(p.restarts),
            str(p.dead_letters),
        )
    if not parts:
        msg = "no partitions known" if not snap.layout_known else "no partition matches"
        table.add_row(Text(msg, "yellow"), "", "", "", "", "", "", "", "", "")
    return table


EVENT_STYLE = {"crash": "red", "dead-letter": "magenta", "fenced": "bold red",
               "rebalance": "cyan", "restart": "yellow"}


def render_events(snap: Snapshot, limit: int | None = None, width: int = 80) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False, expand=False)
    table.add_column("time", no_wrap=True, min_width=8)
    table.add_column("kind", no_wrap=True, min_width=11)
    table.add_column("msg", no_wrap=True, overflow="ellipsis", max_width=max(20, width - 22))
    events = snap.events if limit is None else snap.events[:limit]
    for e in events:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(e.t)),
            Text(e.kind[:11], EVENT_STYLE.get(e.kind, "")),
            e.msg,
        )
    if not events:
        table.add_row("", "", Text("no recent events", "dim"))
    return table


def _title(text: str) -> Text:
    return Text(text, style="bold underline")


def render_frame(
    snap: Snapshot, width: int = 80, height: int = 24, options: ViewOptions | None = None,
    *, keys: bool = False,
) -> RenderableType:
    """The whole screen, cut to ``height`` lines: partitions paginate, others shrink."""
    options = options or ViewOptions()
    # Fixed: header 1, streams 2 + n, coordinator 1, titles/headers.
    n_streams = max(1, len(snap.streams))
    fixed = 1 + (2 + n_streams) + 1
    workers_rows = min(max(1, len(snap.workers)), 4)
    events_rows = min(max(1, len(snap.events)), 4)
    # workers: title + header + rule + rows; partitions: title + header + rule + rows + caption
    rest = height - fixed - (3 + workers_rows) - (1 + events_rows) - 4 - 1
    if rest < 3:
        events_rows = max(1, events_rows + rest - 3)
        rest = 3
    workers_limit = workers_rows if len(snap.workers) <= workers_rows else workers_rows - 1
    parts_limit = rest
    items: list[RenderableType] = [
        render_header(snap, options, keys=keys),
        render_streams(snap),
        render_coordinator(snap),
        _title("workers"),
        render_workers(snap, limit=max(1, workers_limit)),
        _title("partitions" + (f" ({options.filter})" if options.filter != "all" else "")),
        render_partitions(snap, options, limit=parts_limit),
        _title("recent events"),
        render_events(snap, limit=events_rows, width=width),
    ]
    if keys:
        items.append(Text("q quit  s sort  r reverse  f filter  n/p page", "dim"))
    return Group(*items)


def render_status(snap: Snapshot) -> RenderableType:
    """`actorstream status`: everything, no truncation."""
    return Group(
        render_header(snap),
        render_streams(snap),
        render_coordinator(snap),
        _title("workers"),
        render_workers(snap),
        _title("partitions"),
        render_partitions(snap),
        _title("recent events"),
        render_events(snap, limit=10, width=200),
    )
