"""Each panel of `top`, rendered to a recording console at 80 columns."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import attrs
import pytest
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


def test_partitions_show_events_in_flight_where_an_actor_keeps_many() -> None:
    snap = snapshot()
    assert "INFL" not in record(render_partitions(snap))  # one event at a time: no column
    parts = tuple(attrs.evolve(v, concurrency=256, in_flight=v.partition * 3)
                  for v in snap.partitions)
    text = record(render_partitions(attrs.evolve(snap, partitions=parts)))
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith("bill[")}
    assert "INFL" in text
    assert rows["bill[2]"] == ["bill[2]", "hostA-4242", "3", "failed", "20", "5", "12s", "25",
                               "6", "4", "1"]


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


def test_late_events_of_windowed_tables_are_a_column_once_there_are_some() -> None:
    snap = snapshot()
    assert "LATE" not in record(render_partitions(snap))
    parts = tuple(
        attrs.evolve(p, late=7, table_keys=12) if p.partition == 3 else p
        for p in snap.partitions
    )
    text = record(render_partitions(attrs.evolve(snap, partitions=parts)))
    header = next(line for line in text.splitlines() if "PARTITION" in line)
    assert header.split()[-2:] == ["LATE", "KEYS"]
    row = next(line for line in text.splitlines() if line.startswith("bill[3]"))
    assert row.split()[-2:] == ["7", "12"]
    other = next(line for line in text.splitlines() if line.startswith("bill[2]"))
    assert other.split()[-2:] == ["0", "-"]
    assert all(len(line) <= 80 for line in text.splitlines())


def test_outputs_waiting_in_an_outbox_show_under_the_partitions() -> None:
    snap = snapshot()
    parts = tuple(
        attrs.evolve(p, outbox=120 if p.partition == 2 else 0) for p in snap.partitions
    )
    console = Console(record=True, width=120)
    console.print(render_partitions(attrs.evolve(snap, partitions=parts)))
    assert "outbox: bill[2] 120" in console.export_text()


# -- the golden frame: docs/top.txt is a real render ---------------------------------------------

DOCS_TOP = Path(__file__).resolve().parents[2] / "docs" / "top.txt"
#: 2026-12-01 15:01:56 UTC: the frame's clock, fixed (rendered in UTC).
TAKEN_AT = 1796137316.0
DEMO = "vm-6678-1a2b3c4d"


def demo_snapshot() -> Snapshot:
    """What ``actorstream demo`` shows after 20 seconds: the snapshot behind docs/top.txt."""
    rates = (16.0, 29.0, 32.0, 25.0, 21.0, 27.0, 23.0, 23.0)
    parts = tuple(
        PartitionView(
            actor="bill", stream="orders", partition=p, owner=DEMO, epoch=1, state="running",
            lag=0, pending=0, oldest_pending_age=None, processed=460 + p, rate=rates[p],
            restarts=(7, 3, 2, 2, 1, 4, 3, 3)[p], dead_letters=2 if p == 0 else 0,
            last_error=None,
        )
        for p in range(8)
    )
    events = (
        EventView(t=TAKEN_AT - 2, kind="dead-letter", worker=DEMO,
                  msg="bill[0] 1795359711641-0: max_deliveries: delivered 4 times, last "
                      "ValueError: order 61757: amount 10967 is not billable"),
        EventView(t=TAKEN_AT - 3, kind="crash", worker=DEMO,
                  msg="bill[0]: ValueError: order 61757: amount 10967 is not billable"),
        EventView(t=TAKEN_AT - 4, kind="crash", worker=DEMO,
                  msg="bill[7]: ConnectionError: payment gateway timed out for order 61802"),
        EventView(t=TAKEN_AT - 4, kind="crash", worker=DEMO,
                  msg="bill[0]: ValueError: order 61757: amount 10967 is not billable"),
    )
    return Snapshot(
        app="demo", url="redis://127.0.0.1:49545/0", taken_at=TAKEN_AT,
        workers=(WorkerView(worker_id=DEMO, host="vm", pid=6678, uptime=19.0,
                            heartbeat_age=0.455, partitions=8, processed=3698, rate=196.0,
                            restarts=25, dead_lettered=2, last_error=None, member=True,
                            handler_p50=0.0004, handler_p99=0.0025),),
        partitions=parts,
        streams=(StreamView(stream="orders", partitions=8, length=3780, appended=3780,
                            appended_rate=176.0, processed_rate=196.0, lag=0, pending=0,
                            dead_letters=2),),
        coordinator=CoordinatorView(leader=DEMO, members=1, rebalances=1,
                                    last_rebalance_age=20.0, unowned=0, last_error=None),
        events=events,
    )


def test_docs_top_txt_is_the_frame_top_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 80x24 frame, recorded by rich with a fixed clock in UTC, is exactly docs/top.txt.

    After a deliberate change to the renderer, regenerate it with
    ``ACTORSTREAM_UPDATE_GOLDEN=1 pytest tests/unit/test_top_render.py -k docs_top``.
    """
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        text = record(render_frame(demo_snapshot(), 80, 24, keys=True), height=24)
    finally:
        monkeypatch.undo()
        time.tzset()
    frame = "".join(line.rstrip() + "\n" for line in text.splitlines())
    if os.environ.get("ACTORSTREAM_UPDATE_GOLDEN"):
        DOCS_TOP.write_text(frame)
    assert frame == DOCS_TOP.read_text()
