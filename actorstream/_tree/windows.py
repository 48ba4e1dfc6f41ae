"""Windowed tables at run time: one partition's stream time, its open windows, closing them.

Around each handler call (inside the event's retries, outside its table scope):

1. the event's time moves the partition's stream time; windows it closes are emitted first,
   ``on_close`` running in a table scope of their own, so the sends it makes are held and
   committed together with the deletion of the closed windows and the new stream time, in the
   commit that carries the event's ack. A failing ``on_close`` fails the event (it is retried,
   like a handler error) and the closed windows stay queued: none is lost or emitted twice;
2. the handler runs; ``table[k]`` goes to k's window(s) at that stream time;
3. if it returned and its writes were kept, the windows it wrote are tracked (so they close in
   turn); late keys are counted and given to ``on_late``.

The tracker is rebuilt from the table's loaded data whenever the partition
reloads it (a new lease, or a commit whose outcome is unknown): Redis is the truth, stream time
included.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import trio

from .._core.commit import key_of_field
from .._core.windows import Closing, Placement, Window, WindowTracker
from .._scope import _SCOPE
from .._tables import MISSING, EventScope, PartitionTable, PartitionTables, current_scope
from .._windows import (
    ST_FIELD,
    EventWindows,
    WindowedTable,
    encode_stream_time,
    parse_window_field,
    window_field,
)

__all__ = ["PartitionWindows", "WindowsOfPartition", "windowed_tables"]

log = logging.getLogger("actorstream.partition")


def windowed_tables(tables: tuple[Any, ...]) -> tuple[WindowedTable[Any], ...]:
    return tuple(t for t in tables if isinstance(t, WindowedTable))


def plain_windows(spec: Any) -> bool:
    """Whether the handler can take the plain fast path: it is called without the entry id,
    which is the event time of a stream declared without ``time=``."""
    return spec.stream.time is not None or not windowed_tables(spec.tables)


class PartitionWindows(EventWindows):
    """One windowed table on one partition: its tracker, and closings not yet emitted."""

    def __init__(self, table: WindowedTable[Any], local: PartitionTable) -> None:
        super().__init__(table, local, WindowTracker(table.window, retention=table.retention))
        self._data: dict[str, Any] | None = None
        self.closing: list[Closing] = []
        self.expired: list[Closing] = []
        self.saved: int | None = None  # the stream time the table holds (committed or pending)
        self.save_at = self.tracker.next_decision(None)  # save the stream time from then on

    def sync(self) -> None:
        """Rebuild from the table's data if the partition (re)loaded it."""
        data = self.local.data
        if data is self._data:
            return
        stored = data.get(ST_FIELD)
        st = None if stored is None else int(stored)
        tracker = WindowTracker(self.table.window, retention=self.table.retention,
                                stream_time_ms=st)  # fmt: skip
        expired: list[Closing] = []
        for field in data:
            if field == ST_FIELD:
                continue
            key_field, window = parse_window_field(field)
            if not tracker.restore(key_field, window):
                expired.append(Closing(key_field, window))
        self.tracker, self._data, self.saved = tracker, data, st
        self.save_at = tracker.next_decision(st)
        self.placement = Placement(())  # placements of the tracker before do not hold
        self.span = (0, 0, 0)
        self.closing, self.expired = [], expired

    def fast_range(self) -> tuple[int, int]:
        """Event times ``[low, high)`` that would change nothing but the stream time: the
        event's open tumbling window, before the next window closes or leaves and before the
        stream time needs saving. Empty unless the event before was in a tumbling window and
        not late (hopping and session tables decide per event)."""
        if self.fields is None:
            return 0, 0
        low, high, _until = self.span
        due = self.tracker.next_due()
        if due is not None and due < high:
            high = due
        return low, min(high, self.save_at)

    def advance(self, t_ms: int) -> bool:
        """Move stream time; whether windows are waiting to close or leave."""
        closed, expired = self.tracker.advance(t_ms)
        if closed:
            self.closing.extend(closed)
        if expired:
            self.expired.extend(expired)
        return bool(self.closing or self.expired)


class WindowsOfPartition:
    """The windowed tables of one partition actor; ``wrap`` puts them around its handler."""

    def __init__(
        self,
        tables: PartitionTables,
        windowed: tuple[WindowedTable[Any], ...],
        stream: Any,
        counters: Any,
    ) -> None:
        self.tables = tables
        self.parts = {t: PartitionWindows(t, tables.tables[t]) for t in windowed}
        self.plist = list(self.parts.values())
        self.time_of: Callable[[Any, str], int] = stream.event_time_ms
        self.time_value_of: Callable[[Any], object] | None = stream.time_value_of
        self.time_millis: Callable[[object], int] = stream.time_millis
        self.counters = counters
        self.late: collections.Counter[str] = counters.late  # by table (statistics, metrics)
        self.idle = [p for p in self.parts.values() if p.table.idle is not None]
        self.last_event = trio.current_time()  # quiet since (a restart starts it afresh)
        self.last_time: int | None = None  # the highest event time since (re)start
        self.processed = counters.processed  # handled events when ``last_event`` was set
        # The fast path (``wrap_handler``): an event whose time is in [low, high) changes
        # nothing but the stream time (``PartitionWindows.fast_range``, for every table), so
        # it only raises ``top``, the highest such time (float seconds), which ``flush``
        # moves into the trackers before anything decides. ``lo``/``hi``: the same range in
        # float seconds, a millisecond inside it (rounding to milliseconds cannot leave it).
        self.low = self.high = 0
        self.lo = self.hi = 0.0
        self.top = -math.inf
        self.loaded: Any = None  # the table data the range was made for (a reload ends it)
        self.settle = False  # the handler may leave sessions to track or late keys to count
        # ``_keep``: the fields changed since the last commit, per table, and the journal
        # (``PendingCommit.changed``) they are in
        self.batch: dict[PartitionTable, dict[str, Any]] = {}
        self.journal: list[Any] | None = None

    async def on_idle(self) -> None:
        """The partition read nothing: after a table's ``idle`` seconds of quiet, its stream
        time moves on with the wall clock from the last event's time, closing what is due."""
        now = trio.current_time()
        self.flush()
        self.loaded = None  # stream time may move: the fast range is made again
        processed = self.counters.processed
        if processed != self.processed:  # events handled since: quiet from now on at most
            self.processed = processed
            self.last_event = max(self.last_event, now)
        quiet = now - self.last_event
        moved = False
        for part in self.idle:
            assert part.table.idle is not None
            part.sync()
            st = part.tracker.stream_time_ms
            if quiet < part.table.idle or st is None:
                continue
            base = self.last_time if self.last_time is not None else st
            moved = part.advance(base + int(quiet * 1000)) or moved
        if moved:
            await self._close(self.parts)
        elif self.idle:
            self._save_times(self.parts)

    def wrap(self, chain: Callable[..., Any]) -> Callable[..., Any]:
        """``chain(event, info)`` (its table scope inside) with the windows around it."""
        plist = list(self.parts.values())
        time_of = self.time_of

        async def with_windows(event: Any, *info: Any) -> Any:
            t_ms = time_of(event, info[0].entry_id if info else "")
            if self._advance(t_ms):
                await self._close(self.parts)  # emits what closed, then saves the stream time
            for part in plist:
                part.begin(t_ms)
            try:
                result = await chain(event, *info)
            finally:
                for part in plist:
                    part.active = False
            for part in plist:
                if part.fresh or part.late:
                    await self._settle()
                    break
            return result

        return with_windows

    def wrap_handler(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``handler(event)`` with the windows and the table scope around it in one call:
        ``wrap(tables.wrap(handler))`` for the plain hot path (a stream whose events carry a
        time), with the scope of ``PartitionTables.wrap`` reused. An event in the fast range
        (the tumbling window of the event before, nothing due) costs a comparison or two.
        The scope stays the task's current one between calls (setting and resetting a context
        variable per event was a tenth of the path): this task runs no table code of its own
        between handler calls, every other call of it (``on_close``, ``on_late``, a retry)
        goes through ``PartitionTables.wrap``, which sets it in turn, and windowed tables
        refuse access while no event is handled (``EventWindows.active``)."""
        tables = self.tables
        slow = self.wrap(tables.wrap(handler))
        plist = self.plist
        local = plist[0].local
        only = plist[0] if len(plist) == 1 else None
        value_of = self.time_value_of or (lambda event: None)
        set_scope, get_scope = _SCOPE.set, _SCOPE.get
        keep = self._keep if tables.journal else tables.keep

        async def windowed(event: Any) -> Any:
            scope = tables.spare
            if scope is None:
                return await slow(event)
            try:
                value = value_of(event)
            except Exception:  # time_of says what is wrong with it
                value = None
            if type(value) is float and self.lo <= value < self.hi and local.data is self.loaded:
                if value > self.top:
                    self.top = value
            else:
                await self._place(event, value)
            if only is not None:
                only.active = True
            else:
                for part in plist:
                    part.active = True
            tables.spare = None
            if get_scope() is not scope:  # left set between calls (see the docstring)
                set_scope(scope)
            kept = False
            try:
                result = await handler(event)
                if scope.undo or scope.outputs:
                    keep(scope)
                kept = True
            finally:
                if only is not None:
                    only.active = False
                else:
                    for part in plist:
                        part.active = False
                if not kept:
                    tables.drop(scope)
                tables.spare = scope
            if self.settle:
                await self._settle()
            return result

        return windowed

    async def _place(self, event: Any, value: object) -> None:
        """The event's time (``value``: its raw time, or None) when it is not a float in the
        fast range: in the range as milliseconds, or a ``_step``."""
        t_ms = self.time_of(event, "") if value is None else self.time_millis(value)
        if self.low <= t_ms < self.high and self.plist[0].local.data is self.loaded:
            if t_ms / 1000 > self.top:
                self.top = t_ms / 1000
        else:
            await self._step(t_ms)

    def _keep(self, scope: EventScope) -> None:
        """``PartitionTables.keep`` for a journal of changed fields (scalar values, one call
        at a time), with one entry per commit: the fields each call changed join one set
        per table (their values are read when the commit is planned, so which call changed
        them last does not matter), and the call's undo dicts are emptied for the next."""
        pending = self.tables.pending
        if pending.changed is not self.journal:  # a new commit since (or one put back)
            self.journal = pending.changed
            self.batch = {}
            pending.changed.append(self.batch)
        batch = self.batch
        for local, undo in scope.undo.items():
            if undo:
                fields = batch.get(local)
                if fields is None:
                    batch[local] = dict(undo)
                else:
                    fields.update(undo)
                undo.clear()
        if scope.outputs:
            pending.outputs.extend(scope.outputs)
            scope.outputs = []

    async def _step(self, t_ms: int) -> None:
        """An event outside the fast range: stream time moves (closing what is due), each
        table places the event, and the fast range is made afresh around it."""
        if self._advance(t_ms):
            await self._close(self.parts)  # emits what closed, then saves the stream time
        low, high = -1, 2**63
        settle = False
        for part in self.plist:
            part.begin(t_ms)
            part.active = False  # set again around the handler
            settle = settle or part.session or part.missed
            part_low, part_high = part.fast_range()
            low, high = max(low, part_low), min(high, part_high)
        self.settle = settle
        if high - low < 3:  # none (or too narrow for the float form)
            low = high = 0
        self.low, self.high = low, high
        self.lo, self.hi = (low + 1) / 1000, (high - 1) / 1000
        self.loaded = self.plist[0].local.data

    def flush(self) -> None:
        """Move the stream times to the highest event time of the fast path (nothing is due
        before it, by the fast range: this only records it)."""
        top = self.top
        if top == -math.inf:
            return
        self.top = -math.inf
        t_ms = round(top * 1000)
        if self.idle:
            self.last_time = t_ms if self.last_time is None else max(self.last_time, t_ms)
        for part in self.plist:
            part.advance(t_ms)

    def _advance(self, t_ms: int) -> bool:
        """An event's time moves each table's stream time; whether windows wait to close.

        Only when stream time passes the next window's end + grace (the tracker's earliest
        deadline) does anything close, and it is saved only when it could decide something
        (``save_at``): per event, a few comparisons."""
        self.flush()
        self.loaded = None  # the fast range is made again after the event is placed
        if self.idle:
            last = self.last_time
            self.last_event = trio.current_time()
            self.last_time = t_ms if last is None or t_ms > last else last
        closing = save = False
        for part in self.plist:
            if part.local.data is not part._data:
                part.sync()
            st = part.tracker.stream_time_ms
            if st is None or t_ms > st:
                closed, expired = part.tracker.advance(t_ms)
                if closed:
                    part.closing.extend(closed)
                if expired:
                    part.expired.extend(expired)
                save = save or t_ms >= part.save_at
            if part.closing or part.expired:
                closing = True
        if save and not closing:
            self._save_times(self.parts)
        return closing

    async def _settle(self) -> None:
        """After a handler returned: track the sessions it wrote, count late events and give
        them to ``on_late``."""
        for part in self.plist:
            if part.fresh:
                part.written_sessions()
            if part.late:
                self.late[part.table.name] += 1
                if part.table.late_hook is not None:
                    await self._late(part)

    def _save_times(self, parts: dict[WindowedTable[Any], PartitionWindows]) -> None:
        writes = self.tables.pending.writes
        for part in parts.values():
            st = part.tracker.stream_time_ms
            if st is not None and part.tracker.decides_between(part.saved, st):
                # Straight into the pending commit (one field, the last write wins): the
                # in-memory data need not hold it, a reload reads it back from Redis.
                hash_key = part.local.hash_key
                held = writes.get(hash_key)
                if held is None:
                    held = writes[hash_key] = {}
                held[ST_FIELD] = encode_stream_time(st)
                part.saved = st
                part.save_at = part.tracker.next_decision(st)

    async def _close(self, parts: dict[WindowedTable[Any], PartitionWindows]) -> None:
        """Emit what closed and save the stream time, in one scope (all of it or none)."""

        async def emit() -> None:
            scope = current_scope()
            assert scope is not None
            for table, part in parts.items():
                local = part.local
                closer = table.closer
                if closer is not None:
                    for key, window, field in _fields(part.closing):
                        value = local.data.get(field, MISSING)
                        if value is not MISSING:
                            await closer(_key(key), window, value)
                if part.expired:
                    _delete(scope, local, part.expired)

        await self.tables.wrap(emit)()
        for part in parts.values():
            part.closing, part.expired = [], []
        self._save_times(parts)

    async def _late(self, part: PartitionWindows) -> None:
        """Give late keys to ``on_late``, in a scope of their own (committed with the event).

        The event's own writes are kept already, so a failing hook cannot fail the event (it
        would be handled twice): it is logged and its sends dropped, the event still counted
        as late.
        """
        table, late, t_ms = part.table, part.late, part.t_ms
        hook = table.late_hook
        assert hook is not None

        async def report() -> None:
            for key_field, placement in late.items():
                await hook(_key(key_field), t_ms / 1000, placement.missed)

        try:
            await self.tables.wrap(report)()
        except Exception:
            log.exception("on_late of table %s failed; its sends are dropped", table.name)


def _key(key_field: object) -> Any:
    return key_of_field(str(key_field))


def _fields(closings: list[Closing]) -> Iterator[tuple[Hashable, Window, str]]:
    """``(key, window, hash field)`` of each closing (a window's suffix made once: a time
    window closes for all its keys at once)."""
    last: Window | None = None
    suffix = ""
    for key, window in closings:
        if window is not last:
            last, suffix = window, window_field("", window)
        yield key, window, f"{key}{suffix}"


def _delete(scope: EventScope, local: PartitionTable, gone: list[Closing]) -> None:
    """Delete the fields of windows that leave, in ``scope`` (``write`` of MISSING, inlined:
    thousands at once when a window of many keys closes)."""
    data = local.data
    undo = scope.undo.get(local)
    if undo is None:
        undo = scope.undo[local] = {}
    for _key_field, _window, field in _fields(gone):
        value = data.pop(field, MISSING)
        if value is not MISSING and field not in undo:
            undo[field] = value
