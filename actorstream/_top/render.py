"""Rendering ``top`` and ``status`` with rich: pure functions of a ``Snapshot``.

Each panel is a function returning a rich renderable, so it is tested on a recording console.
A worker has one display name on the whole screen (``Snapshot.worker_names``: its id, short
when unambiguous) in the workers table, partition owners, the leader and the events.
"""

from __future__ import annotations

import io
import math
import re
import time

import attrs
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .model import PartitionView, Snapshot


@attrs.define
class ViewOptions:
    """What the keyboard changes: sort order, filter, page."""

    sort: str = "partition"
    reverse: bool = False
    filter: str = "all"  # all | problems | text filter
    page: int = 0


SORTS = ("partition", "lag", "pending", "rate", "restarts", "dlq", "owner")
FILTERS = ("all", "problems")


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


#: How a number is shown: by the first step it is below, divided by that step's divisor.
Steps = tuple[tuple[float, float, str], ...]
_AGE: Steps = (
    (1, 0.001, "{:.0f}ms"), (10, 1, "{:.1f}s"), (60, 1, "{:.0f}s"), (3600, 60, "{:.0f}m"),
    (86400, 3600, "{:.1f}h"), (math.inf, 86400, "{:.1f}d"),
)
_COUNT: Steps = ((100_000, 1, "{:.0f}"), (10_000_000, 1000, "{:.0f}k"), (math.inf, 1e6, "{:.0f}M"))
_RATE: Steps = ((10, 1, "{:.1f}"), (100_000, 1, "{:.0f}"), (math.inf, 1000, "{:.0f}k"))


def scaled(value: float, steps: Steps) -> str:
    """``value`` in the unit of its size (the last step's beyond the last bound)."""
    _below, divisor, fmt = next((step for step in steps if value < step[0]), steps[-1])
    return fmt.format(value / divisor)


def fmt_age(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return scaled(seconds, _AGE) if seconds > 0 else "0s"


def fmt_int(value: int | None) -> str:
    return "?" if value is None else scaled(value, _COUNT)


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else scaled(value, _RATE)


STATE_STYLE = {
    "running": "green",
    "replaying": "cyan",
    "restoring": "cyan",
    "starting": "cyan",
    "draining": "yellow",
    "waiting-redis": "yellow",
    "backing-off": "bold yellow",
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
    leader = snap.worker_names().get(c.leader, c.leader) if c.leader else "none"
    text.append(f"leader {leader} · members {c.members} · ")
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
    table.columns[0].overflow = "ellipsis"
    table.columns[0].max_width = 24
    names = snap.worker_names()
    rows = snap.workers if limit is None else snap.workers[:limit]
    for w in rows:
        table.add_row(
            names[w.worker_id], fmt_age(w.heartbeat_age), str(w.partitions), fmt_rate(w.rate),
            fmt_int(w.processed), str(w.restarts), fmt_ms(w.handler_p99), fmt_age(w.uptime),
            Text(w.status, "green" if w.status == "ok" else "yellow"),
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
            if needle in p.label.lower() or needle in (p.owner or "").lower()
            or needle in p.state.lower()
        ]
    keys = {
        "partition": lambda p: (p.actor, p.stream, p.partition),
        "lag": lambda p: (p.lag or 0, p.label),
        "pending": lambda p: (p.pending, p.label),
        "rate": lambda p: (p.rate or 0.0, p.label),
        "restarts": lambda p: (p.restarts, p.label),
        "dlq": lambda p: (p.dead_letters, p.label),
        "owner": lambda p: (p.owner or "", p.label),
    }
    descending = options.sort not in ("partition", "owner")
    parts.sort(key=keys.get(options.sort, keys["partition"]),
               reverse=descending != options.reverse)
    return parts


def render_partitions(
    snap: Snapshot, options: ViewOptions | None = None, limit: int | None = None
) -> RenderableType:
    """The partitions table; a sentence of its own (never cut to a column) when it is empty."""
    options = options or ViewOptions()
    parts = select_partitions(snap, options)
    if not parts:
        if not snap.layout_known:
            why = ("no partitions known: no live worker reports them, and no stream of "
                   f"app {snap.app!r} is in Redis")
        elif not snap.partitions:
            why = "no actor reads these streams yet (they have no consumer groups)"
        else:
            why = "no partition matches the filter"
        return Text(why, "yellow")
    pages = 1
    if limit is not None and limit > 0 and len(parts) > limit:
        pages = math.ceil(len(parts) / limit)
        options.page = min(options.page, pages - 1)
        parts = parts[options.page * limit : (options.page + 1) * limit]
    # Optional columns: events in flight where an actor keeps more than one (ordering="key"),
    # late events where a windowed table had some, table keys where an actor is stateful.
    in_flight = any(p.concurrency > 1 for p in parts)
    late = any(p.late for p in parts)
    stateful = any(p.table_keys is not None for p in parts)
    table = _table(("PARTITION", "left"), ("OWNER", "left"), ("EP", "right"),
                   ("STATE", "left"), ("LAG", "right"), ("PEND", "right"), ("OLDEST", "right"),
                   ("RATE/S", "right"), *([("INFL", "right")] if in_flight else []),
                   ("RST", "right"), ("DLQ", "right"), *([("LATE", "right")] if late else []),
                   *((("KEYS", "right"),) if stateful else ()))
    table.collapse_padding = in_flight or late  # one column more in 80 columns
    table.columns[0].max_width = 12
    table.columns[1].max_width = 18
    if late:  # with KEYS always (a windowed table is a table): one space between columns
        table.padding = (0, 0)
    table.columns[1].overflow = "ellipsis"
    table.columns[3].max_width = 13
    if pages > 1:
        table.caption = f"page {options.page + 1}/{pages} (n/p)"
    waiting = [f"{p.label} {p.outbox}" for p in parts if p.outbox]
    if waiting:  # exactly-once on a Cluster: outputs not yet forwarded from the outbox
        shown = "outbox: " + ", ".join(waiting[:6]) + (" ..." if len(waiting) > 6 else "")
        table.caption = f"{table.caption}; {shown}" if table.caption else shown
    names = snap.worker_names()
    for p in parts:
        flight = ["-" if p.in_flight is None else str(p.in_flight)] if in_flight else []
        table.add_row(
            p.label[:12], names.get(p.owner, p.owner) if p.owner else "-",
            "-" if p.epoch is None else str(p.epoch),
            Text(p.state, STATE_STYLE.get(p.state, "")), fmt_int(p.lag), fmt_int(p.pending),
            fmt_age(p.oldest_pending_age) if p.pending else "-", fmt_rate(p.rate),
            *flight, str(p.restarts), str(p.dead_letters),
            *([fmt_int(p.late)] if late else []),
            *((fmt_int(p.table_keys) if p.table_keys is not None else "-",) if stateful else ()),
        )
    return table


EVENT_STYLE = {"crash": "red", "dead-letter": "magenta", "fenced": "bold red",
               "rebalance": "cyan", "restart": "yellow", "backing-off": "bold yellow",
               "missed": "bold yellow", "lost": "bold red"}


def _with_names(msg: str, names: dict[str, str]) -> str:
    """A message that mentions a worker id uses the worker's one display name."""
    for worker_id, name in names.items():
        if worker_id != name and worker_id in msg:
            msg = msg.replace(worker_id, name)
    return msg


def render_events(snap: Snapshot, limit: int | None = None, width: int = 80) -> Table:
    """Recent events, newest first, each with the worker it came from."""
    events = snap.events if limit is None else snap.events[:limit]
    names = snap.worker_names()
    shown = [names.get(e.worker, e.worker) or "?" for e in events]
    worker_width = min(20, max((len(n) for n in shown), default=1))
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False, expand=False)
    table.add_column("time", no_wrap=True, min_width=8)
    table.add_column("kind", no_wrap=True, min_width=11)
    table.add_column("worker", no_wrap=True, overflow="ellipsis", max_width=worker_width)
    # time, kind, worker and the three two-space gaps between the four columns.
    table.add_column("msg", no_wrap=True, overflow="ellipsis",
                     max_width=max(20, width - 8 - 11 - worker_width - 6))
    for e, worker in zip(events, shown, strict=True):
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(e.t)),
            Text(e.kind[:11], EVENT_STYLE.get(e.kind, "")),
            Text(worker, "dim"),
            _with_names(e.msg, names),
        )
    if not events:
        table.add_row("", "", "", Text("no recent events", "dim"))
    return table


def _title(text: str) -> Text:
    return Text(text, style="bold underline")


def render_frame(
    snap: Snapshot, width: int = 80, height: int | None = 24,
    options: ViewOptions | None = None, *, keys: bool = False,
) -> RenderableType:
    """The whole screen, cut to ``height`` lines: partitions paginate, others shrink.

    ``height=None`` (``top --once`` into a pipe or file): nothing is cut or paginated.
    """
    options = options or ViewOptions()
    if height is None:
        return Group(
            render_header(snap, options), render_streams(snap), render_coordinator(snap),
            _title("workers"), render_workers(snap),
            _title("partitions" + (f" ({options.filter})" if options.filter != "all" else "")),
            render_partitions(snap, options),
            _title("recent events"), render_events(snap, limit=10, width=width),
        )
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
    """`actorstream status`: everything, no truncation, and not top's header."""
    clock = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    return Group(
        Text.assemble(("app ", "bold"), (snap.app, "bold"), f" at {snap.url}, {clock}"),
        render_streams(snap),
        render_coordinator(snap),
        _title("workers"),
        render_workers(snap),
        _title("partitions"),
        render_partitions(snap),
        _title("recent events"),
        render_events(snap, limit=10, width=200),
    )


_TRAILING = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


def status_text(snap: Snapshot, *, width: int = 120, color: bool = False) -> str:
    """``render_status`` as text with no trailing spaces (rich pads table cells)."""
    console = Console(file=io.StringIO(), width=width, highlight=False,
                      color_system="standard" if color else None, force_terminal=color)
    with console.capture() as capture:
        console.print(render_status(snap))
    return _TRAILING.sub(r"\1", capture.get())
