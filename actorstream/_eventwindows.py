"""A windowed table's view of the event being handled, on one partition.

``_tree.windows`` sets it for each event (``begin``) and the table's mapping (``_windows``)
reads it, so that a table access costs a few dict lookups: for time windows the windows of an
event depend on its time only, and their hash-field suffixes are made once for all the events
that share them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core.commit import KEY_SEPARATOR
from ._core.windows import Hopping, Placement, Session, Window, WindowTracker
from ._scope import PartitionTable

if TYPE_CHECKING:
    from ._windows import WindowedTable

__all__ = ["EventWindows"]

#: Keys remembered as checked to be of the partition, at most (then forgotten, checked again).
CHECKED = 65536


class EventWindows:
    """One windowed table on one partition as its handler sees it: the event being handled
    (a partition handles one at a time: ``check_windowed_actor``) and where its keys go."""

    def __init__(self, table: WindowedTable[Any], local: PartitionTable,
                 tracker: WindowTracker) -> None:  # fmt: skip
        self.table = table
        self.local = local
        self.tracker = tracker
        local.windows = self
        self.session = isinstance(table.window, Session)
        self.hopping = isinstance(table.window, Hopping)
        self.active = False  # an event is being handled (its handler may use the table)
        self.t_ms = 0
        #: time windows: the event's placement and its windows' hash-field suffixes
        self.placement = Placement(())
        self.suffixes: tuple[str, ...] = ()
        self.missed = False
        #: a tumbling table's one window suffix for an event that is not late, else None
        self.fast_suffix: str | None = None
        #: with ``fast_suffix``: the hash field of each key (an int or a str) used in that
        #: window, checked to be of this partition (``field``); else None
        self.fields: dict[object, str] | None = None
        self.checked: dict[object, str] = {}  # keys of this partition: their key field
        #: while an event's time is in [low, high) and stream time before ``until``, its
        #: placement is the one before (a tumbling window's, open)
        self.span = (0, 0, 0)
        self.grace_ms = table.window.grace_ms
        #: key fields whose event missed a window (late), with their placement
        self.late: dict[str, Placement] = {}
        #: sessions: per key of this event its placement, and those to track if written
        self.placements: dict[object, tuple[str, Placement, tuple[str, ...]]] = {}
        self.fresh: dict[str, Placement] = {}
        self.written: set[str] = set()

    def begin(self, t_ms: int) -> None:
        """The event at ``t_ms`` is about to be handled (stream time moved already)."""
        self.t_ms = t_ms
        if self.late:
            self.late = {}
        self.active = True
        if self.session:
            if self.placements:
                self.placements, self.fresh, self.written = {}, {}, set()
            return
        low, high, until = self.span
        if low <= t_ms < high and self.tracker.stream_time_ms < until:  # type: ignore[operator]
            return  # the same open tumbling window as the event before
        placement = self.tracker.plan(None, t_ms)
        if placement is not self.placement:
            self.placement = placement
            self.suffixes = tuple(
                f"{KEY_SEPARATOR}{w.start_ms}:{w.end_ms}" for w in placement.windows
            )
            self.missed = bool(placement.missed)
            tumbling = not self.hopping and not self.missed
            self.fast_suffix = self.suffixes[0] if tumbling else None
            self.fields = {} if tumbling else None
            window = placement.windows[0] if tumbling else Window(0, 0)
            self.span = (window.start_ms, window.end_ms, window.end_ms + self.grace_ms)

    def field(self, key: int | str) -> str:
        """The hash field of ``key`` (an int or a str) in the event's tumbling window,
        remembered while the window stays the same; the key is checked to belong to this
        partition once (for the many windows of a key; forgotten past ``CHECKED``)."""
        checked = self.checked
        key_field = checked.get(key)
        if key_field is None:
            key_field = key if type(key) is str else str(key)
            self.local.check_partition(key_field)
            if len(checked) >= CHECKED:
                checked.clear()
            checked[key] = key_field
        assert self.fields is not None and self.fast_suffix is not None
        field = self.fields[key] = key_field + self.fast_suffix
        return field

    def first_write(self, field: str) -> None:
        """The handler wrote ``field`` of the tumbling window, which held nothing: track it
        (to close it in turn)."""
        assert self.fast_suffix is not None
        self.tracker.add(field[: -len(self.fast_suffix)], self.placement.windows[0])

    def written_sessions(self) -> None:
        """The handler returned: track the sessions it wrote (a merged one replaces its
        parts). Time windows are tracked when first written: one tracked for a handler that
        then failed closes with nothing stored, so nothing is emitted."""
        written = self.written
        for key_field, placement in self.fresh.items():
            if key_field in written:
                self.tracker.apply(key_field, placement)
