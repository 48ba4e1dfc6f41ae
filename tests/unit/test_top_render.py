"""Each panel of `top`, rendered to a recording console at 80 columns."""

from __future__ import annotations

import re
import time

import attrs
from rich.console import Console

from actorstream._top import (
    CoordinatorView,
    EventView,
    PartitionView,
    Snapshot,
    StreamView,
    ViewOptions,
    WorkerView,
    fmt_age,
    render_coordinator,
    render_events,
    render_frame,
    render_partitions,
    render_streams,
    render_workers,
    status_text,
)
from actorstream._top.model import short_names
from actorstream.cli._top import apply_key


def snapshot(n_partitions: int = 8, n_events: int = 10) -> Snapshot:
    now = time.time()
    parts = tuple(
        PartitionView(
            actor="bill", stream="orders", partition=p,
            owner=None if p == 7 else "hostA-4242-ab12cd34",
            epoch=3 if p != 7 else None,
            state="unowned" if p == 7 else ("failed" if p == 2 else "running"),
            lag=p * 10, pending=5 if p == 2 else 0, oldest_pending_age=12.0 if p == 2 else None,
            processed=1000 + p, rate=25.0, restarts=4 if p == 2 else 0,
            dead_letters=1 if p == 2 else 0, last_error=None,
        )
        for p in range(n_partitions)
    )
    return Snapshot(
        app="shop", url="redis://127.0.0.1:6400/0", taken_at=now,
        workers=(
            WorkerView(worker_id="hostA-4242-ab12cd34", host="hostA", pid=4242, uptime=75.0,
                       heartbeat_age=0.4,
                       partitions=7, processed=8000, rate=175.0, restarts=4, dead_lettered=1,
                       last_error=None, member=True, handler_p50=0.0004, handler_p99=0.0123),
        ),
        partitions=parts,
        streams=(StreamView(stream="orders", partitions=n_partitions, length=9000,
                            appended=9000, appended_rate=180.0, processed_rate=175.0,
                            lag=280, pending=5, dead_letters=1),),
        coordinator=CoordinatorView(leader="hostA-4242-ab12cd34", members=1, rebalances=2,
                                    last_rebalance_age=42.0, unowned=1, last_error=None),
        events=tuple(
            EventView(t=now - i, kind="crash" if i % 2 else "dead-letter",
                      msg=f"bill[2]: ValueError: boom {i} " + "x" * 100,
                      worker="hostA-4242-ab12cd34")
            for i in range(n_events)
        ),
    )


def record(renderable: object, height: int = 200) -> str:
    console = Console(record=True, width=80, height=height, color_system=None)
    console.print(renderable)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    return text


def test_streams_panel() -> None:
    text = record(render_streams(snapshot()))
    assert "APPENDED/S" in text and "PROCESSED/S" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("orders"))
    assert line.split() == ["orders", "8", "180", "175", "9000", "280", "5", "1"]


def test_coordinator_panel() -> None:
    text = record(render_coordinator(snapshot()))
    assert "leader hostA-4242 " in text
    assert "last rebalance 42s ago" in text
    assert "unowned 1" in text


def test_workers_panel() -> None:
    text = record(render_workers(snapshot()))
    row = next(ln for ln in text.splitlines() if ln.startswith("hostA-4242"))
    assert row.split() == ["hostA-4242", "400ms", "7", "175", "8000", "4", "12.3", "1m", "ok"]
    assert "STATUS" in text


def test_partitions_panel_states_in_words() -> None:
    text = record(render_partitions(snapshot()))
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith("bill[")}
    assert rows["bill[2]"] == ["bill[2]", "hostA-4242", "3", "failed", "20", "5", "12s", "25",
                               "4", "1"]
    assert rows["bill[7]"][1:4] == ["-", "-", "unowned"]


def test_partitions_sort_filter_and_pages() -> None:
    snap = snapshot(n_partitions=30)
    options = ViewOptions(sort="lag")
    text = record(render_partitions(snap, options))
    first = next(ln for ln in text.splitlines() if ln.startswith("bill["))
    assert first.startswith("bill[29]")
    options = ViewOptions(filter="problems")
    text = record(render_partitions(snap, options))
    assert "bill[2]" in text
    assert "bill[0] " not in text  # lag 0, running, nothing pending: not a problem
    options = ViewOptions(page=1)
    text = record(render_partitions(snap, options, limit=10))
    assert "page 2/3" in text and "bill[10]" in text and "bill[9] " not in text
    # Keys: s cycles the sort, f the filter, n/p the page, q quits.
    options = ViewOptions()
    assert apply_key("s", options) and options.sort == "lag"
    assert apply_key("f", options) and options.filter == "problems"
    assert apply_key("n", options) and options.page == 1
    assert not apply_key("q", options)


def test_events_panel_truncates_to_width() -> None:
    text = record(render_events(snapshot(), limit=3))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 3
    assert "dead-letter" in lines[0] and "crash" in lines[1]
    assert all(" hostA-4242 " in line for line in lines)  # events name their worker
    assert lines[0].rstrip().endswith("…")


def test_frame_fits_80x24() -> None:
    for n in (1, 8, 64):
        text = record(render_frame(snapshot(n_partitions=n), 80, 24, keys=True), height=24)
        assert len(text.rstrip("\n").splitlines()) <= 24, text
        assert "actorstream top" in text and "recent events" in text


def test_fmt_age() -> None:
    assert fmt_age(None) == "-"
    assert fmt_age(0.25) == "250ms"
    assert fmt_age(5) == "5.0s"
    assert fmt_age(125) == "2m"


def test_empty_partitions_say_why_in_full() -> None:
    snap = attrs.evolve(snapshot(), partitions=(), layout_known=False)
    text = record(render_partitions(snap))
    assert "no partitions known" in text and "…" not in text
    text = record(render_frame(snap, 80, 24))
    assert "no partitions known" in text


def test_status_has_no_top_header_and_no_trailing_spaces() -> None:
    text = status_text(snapshot(), width=100)
    assert "actorstream top" not in text
    assert text.splitlines()[0].startswith("app shop at redis://127.0.0.1:6400/0")
    assert all(line == line.rstrip() for line in text.splitlines())
    assert "bill[2]" in text and "recent events" in text
    colored = status_text(snapshot(), width=100, color=True)
    assert "\x1b[" in colored
    assert all(not re.search(r" (\x1b\[[0-9;]*m)*$", line) for line in colored.splitlines())


def test_one_name_per_worker_on_the_whole_screen() -> None:
    names = short_names(["vm-10105-39e403ab", "vm-2-0000aaaa", "vm-2-1111bbbb", "odd"])
    assert names == {"vm-10105-39e403ab": "vm-10105", "vm-2-0000aaaa": "vm-2-0000aaaa",
                     "vm-2-1111bbbb": "vm-2-1111bbbb", "odd": "odd"}
    snap = snapshot()
    text = record(render_frame(snap, 80, 40))
    assert "hostA-4242 " in text and "hostA:4242" not in text and "ab12cd34" not in text


def test_frame_without_a_height_cuts_nothing() -> None:
    snap = snapshot(n_partitions=40)
    text = record(render_frame(snap, 80, None))
    assert "page " not in text and "bill[39]" in text and "more" not in text


def test_late_events_of_windowed_tables_show_under_the_partitions() -> None:
    snap = snapshot()
    parts = tuple(
        attrs.evolve(p, late=7) if p.partition == 3 else p for p in snap.partitions
    )
    console = Console(record=True, width=120)
    console.print(render_partitions(attrs.evolve(snap, partitions=parts)))
    assert "late events: bill[3] 7" in console.export_text()
