"""Windowed tables: a table whose values are kept per key and per window of event time.

``system.table("per_minute", value=int, default=0, window=Tumbling(60.0, grace=5.0))`` is a
table like any other (same hash beside the partition, same commit with the ack); its hash
fields are ``key + "\\x1f" + "<start_ms>:<end_ms>"``, plus one field holding the partition's
stream time, so a partition that moves takes its windows and its clock along. In a handler,
``per_minute[k]`` addresses k's window that the current event falls in (all of them for a
hopping window, as a ``PerWindow`` value); the arithmetic of which windows, which are late and
which close is in ``_core.windows``, and ``_tree.windows`` runs it per partition.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable
from typing import Any, TypeVar

from ._actors import ActorSpec, Form
from ._core.commit import KEY_SEPARATOR, field_of, key_of_field, partition_of_field
from ._core.errors import ConfigError, TableError
from ._core.windows import (
    Placement,
    Session,
    Window,
    WindowSpec,
    check_spec,
    to_millis,
)
from ._eventwindows import EventWindows
from ._scope import _SCOPE
from ._tables import _INT_MIN, _UINT_MAX, MISSING, EventScope, PartitionTable, Table, ValueCodec

__all__ = [
    "ST_FIELD", "EventWindows", "PerWindow", "StreamTime", "WindowedTable", "window_field",
]

V = TypeVar("V")

#: Bound once: a method of an imported name is looked up per call (no LOAD_METHOD for it).
_current_scope = _SCOPE.get

#: The hash field holding the partition's stream time (no window field starts with it).
ST_FIELD = KEY_SEPARATOR + "stream-time"
_ST_PREFIX = b"\x00stream-time:"


def window_field(key_field: str, window: Window) -> str:
    return f"{key_field}{KEY_SEPARATOR}{window.start_ms}:{window.end_ms}"


def parse_window_field(field: str) -> tuple[str, Window]:
    key_field, _, token = field.rpartition(KEY_SEPARATOR)
    return key_field, Window.from_token(token)


class StreamTime(int):
    """A stored stream time (epoch milliseconds), told apart from the table's values."""


def encode_stream_time(st: int) -> bytes:
    return _ST_PREFIX + str(st).encode()


class WindowCodec:
    """The table's value codec; decoding also knows the stream time stored among the values
    (written by ``encode_stream_time``, straight into the commit)."""

    def __init__(self, inner: ValueCodec) -> None:
        self.inner = inner
        self.check = inner.check
        self.encode = inner.encode
        self.deferred = inner.deferred

    def decode(self, data: bytes) -> Any:
        if data.startswith(_ST_PREFIX):
            return StreamTime(int(data[len(_ST_PREFIX) :]))
        return self.inner.decode(data)


class PerWindow:
    """A hopping table's value for one key: one value per window the event falls in.

    Arithmetic applies to each (``per_5min[k] += amount``); ``values`` maps window -> value.
    """

    __slots__ = ("values",)

    def __init__(self, values: dict[Window, Any]) -> None:
        self.values = values

    def map(self, fn: Callable[[Any], Any]) -> PerWindow:
        return PerWindow({w: fn(v) for w, v in self.values.items()})

    def __repr__(self) -> str:
        return f"PerWindow({self.values!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerWindow) and other.values == self.values

    __hash__ = None  # type: ignore[assignment]


def _lift(op: Callable[[Any, Any], Any]) -> Callable[[PerWindow, Any], PerWindow]:
    def apply(self: PerWindow, other: Any) -> PerWindow:
        return self.map(lambda v: op(v, other))

    return apply


for _name, _op in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("or", operator.or_), ("and", operator.and_)):  # fmt: skip
    setattr(PerWindow, f"__{_name}__", _lift(_op))


def _check_seconds(name: str, what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"table {name!r}: {what} must be a finite number of seconds, got "
                          f"{value!r}")  # fmt: skip
    if value < 0:
        raise ConfigError(f"table {name!r}: {what} must be >= 0 seconds, got {value!r}")
    return float(value)


def _check_callback(name: str, what: str, fn: object, params: int) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigError(f"table {name!r}: {what} must be an `async def` function, got {fn!r}")
    try:
        inspect.signature(fn).bind(*range(params))
    except TypeError:
        raise ConfigError(
            f"table {name!r}: {what} {getattr(fn, '__name__', fn)}() must take {params} arguments"
        ) from None


def check_windowed_actor(spec: ActorSpec) -> None:
    """Windows need one event time per handler call, and every earlier event of the partition
    applied when one closes: the event form, one event at a time per partition."""
    windowed = [t.name for t in spec.tables if isinstance(t, WindowedTable)]
    if not windowed:
        return
    if spec.form is not Form.EVENT:
        raise ConfigError(
            f"actor {spec.name!r}: windowed table(s) {', '.join(windowed)} need the event form "
            "(a handler of one event: a window is chosen by that event's time)"
        )
    ordering = getattr(spec.settings.ordering, "value", spec.settings.ordering)
    if ordering != "partition":
        raise ConfigError(
            f"actor {spec.name!r}: windowed table(s) {', '.join(windowed)} need "
            f"ordering='partition' (got {ordering!r}): a window closes when stream time passes "
            "it, and every earlier event of the partition must be counted by then; its "
            "handler sees the window of one event at a time"
        )


class WindowedTable(Table[V]):
    """A table of values per (key, window). See the module docstring and docs/windows.md.

    ``retention``: how long (seconds of stream time) a closed window stays readable in the
    table after it was emitted (default: it leaves at once). ``merge(a, b)``: how the values of
    two sessions combine when an event bridges them (numbers: added). ``idle``: after this many
    seconds without an event, a partition's stream time moves on with the wall clock, so its
    last windows close (events that come later for them are then late).
    """

    def __init__(
        self,
        system: Any,
        name: str,
        *,
        value: type[V],
        default: Any,
        codec: str,
        window: WindowSpec,
        retention: float = 0.0,
        merge: Callable[[Any, Any], Any] | None = None,
        idle: float | None = None,
    ) -> None:
        super().__init__(system, name, value=value, default=default, codec=codec)
        self.window = check_spec(window, f"table {name!r}")
        self.retention = _check_seconds(name, "retention", retention)
        self.idle = None if idle is None else _check_seconds(name, "idle", idle)
        if self.idle == 0:
            raise ConfigError(f"table {name!r}: idle must be > 0 seconds (or None), got {idle!r}")
        if abs(to_millis(self.retention) - self.retention * 1000) > 1e-6:
            raise ConfigError(f"table {name!r}: retention must be a whole number of milliseconds")
        if merge is None and isinstance(window, Session):
            if value not in (int, float):
                raise ConfigError(
                    f"table {name!r}: a session table of {getattr(value, '__name__', value)} "
                    "values needs merge=: a function (a, b) -> value combining two sessions "
                    "that an event bridges"
                )
            merge = operator.add
        if merge is not None and not callable(merge):
            raise ConfigError(f"table {name!r}: merge must be a function (a, b) -> value")
        self.merge = merge
        self.codec = WindowCodec(self.codec)  # type: ignore[assignment]
        self.closer: Callable[..., Any] | None = None
        self.late_hook: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        return f"<WindowedTable {self.name} {self.window!r}>"

    def on_close(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``async def emit(key, window, value)``: called once per (key, window) when
        stream time passes the window's end + grace, in the commit of the event that moved it."""
        _check_callback(self.name, "on_close", fn, 3)
        self.closer = fn
        return fn

    def on_late(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``async def late(key, event_time, windows)``: an event of ``key`` came after
        its window(s) closed (it is not counted in them)."""
        _check_callback(self.name, "on_late", fn, 3)
        self.late_hook = fn
        return fn

    # -- in a handler -------------------------------------------------------------------------

    def _here(self) -> tuple[EventScope, PartitionTable, EventWindows]:
        scope, local = self._local()
        slot = local.windows
        if slot is None or not slot.active:
            raise self._no_event()
        return scope, local, slot

    def _no_event(self) -> TableError:
        return TableError(
            f"table {self.name!r} is windowed: it is addressed by the time of the event "
            "being handled, in a handler (event form) of the actor that declared it"
        )

    def _placement(self, local: PartitionTable, slot: EventWindows, key: object) -> tuple[
        str, Placement, tuple[str, ...]
    ]:  # fmt: skip
        """Where ``key`` goes for this event, and the hash fields of its windows."""
        if not slot.session:  # time windows: the event's, whatever the key
            key_field = key if type(key) is str else field_of(key)
            placement = slot.placement
            fields = tuple(key_field + suffix for suffix in slot.suffixes)
            if slot.missed:
                slot.late[key_field] = placement
            data = local.data
            if not fields or any(field not in data for field in fields):
                local.check_partition(key_field)
            return key_field, placement, fields
        try:
            found = slot.placements.get(key)
        except TypeError:  # unhashable: field_of says what a key may be
            found = None
        if found is None:
            key_field = key if type(key) is str else field_of(key)
            placement = slot.tracker.plan(key_field, slot.t_ms)
            fields = tuple(window_field(key_field, w) for w in placement.windows)
            data = local.data
            if placement.merged or not fields or any(field not in data for field in fields):
                local.check_partition(key_field)
                slot.fresh[key_field] = placement  # to track if it writes them
            found = slot.placements[key] = (key_field, placement, fields)
            if placement.late:
                slot.late[key_field] = placement
        return found

    def _value(self, local: PartitionTable, key_field: str, placement: Placement,
               field: str) -> Any:  # fmt: skip
        data = local.data  # written through: this call's writes included
        if placement.merged:  # a session merged from others: its value combines theirs
            fields = [window_field(key_field, w) for w in placement.merged]
            found = [v for f in fields if (v := data.get(f, MISSING)) is not MISSING]
            if found:
                assert self.merge is not None
                return functools.reduce(self.merge, found)
        else:
            value = data.get(field, MISSING)
            if value is not MISSING:
                return value
        return self.make_default(field)

    # The two methods below run per access on the hot path: a tumbling window's is inlined.

    def __getitem__(self, key: object) -> V:
        scope = _current_scope()
        if scope is None:
            raise self._outside()
        local = scope.tables.get(self)
        if local is None:
            raise self._undeclared(scope)
        slot = local.windows
        if slot is None or not slot.active:
            raise self._no_event()
        cached = slot.fields
        if cached is not None:
            kind = type(key)
            if kind is int or kind is str:
                field = cached.get(key) or slot.field(key)
            else:
                key_field = field_of(key)
                local.check_partition(key_field)
                field = key_field + slot.fast_suffix
            value = local.data.get(field, MISSING)
            if value is MISSING:
                return self.make_default(field)  # type: ignore[no-any-return]
            return value  # type: ignore[no-any-return]
        key_field, placement, fields = self._placement(local, slot, key)
        if slot.hopping:
            return self._per_window(local, key_field, placement, fields)  # type: ignore[return-value]
        if not fields:  # late: its window closed already
            return self.make_default(key_field)  # type: ignore[no-any-return]
        return self._value(local, key_field, placement, fields[0])  # type: ignore[no-any-return]

    def _per_window(self, local: PartitionTable, key_field: str, placement: Placement,
                    fields: tuple[str, ...]) -> PerWindow:  # fmt: skip
        # Not inlined: a comprehension would make cells of ``__getitem__``'s locals (per call).
        return PerWindow(
            {
                w: self._value(local, key_field, placement, f)
                for w, f in zip(placement.windows, fields, strict=True)
            }
        )

    def __setitem__(self, key: object, value: Any) -> None:
        scope = _current_scope()
        if scope is None:
            raise self._outside()
        local = scope.tables.get(self)
        if local is None:
            raise self._undeclared(scope)
        slot = local.windows
        if slot is None or not slot.active:
            raise self._no_event()
        cached = slot.fields
        if cached is None or type(value) is PerWindow:
            self._set(scope, local, slot, key, value)
            return
        kind = type(key)
        if kind is int or kind is str:
            field = cached.get(key) or slot.field(key)
        else:
            key_field = field_of(key)
            local.check_partition(key_field)
            field = key_field + slot.fast_suffix
        if type(value) is not int or not self._int or not _INT_MIN <= value <= _UINT_MAX:
            value = self.codec.check(value)
        data = local.data
        undo = scope.undo.get(local)
        if undo is None:
            undo = scope.undo[local] = {}
        if field not in undo:
            old = data.get(field, MISSING)
            if old is MISSING:
                slot.first_write(field)
            undo[field] = old
        data[field] = value

    def _set(self, scope: EventScope, local: PartitionTable, slot: EventWindows, key: object,
             value: Any) -> None:  # fmt: skip
        key_field, placement, fields = self._placement(local, slot, key)
        if not fields:
            return  # a late event is not counted (it is counted as late)
        check = self.codec.check
        new = False
        if type(value) is not PerWindow:
            checked = check(value)
            for field in fields:
                new = write(scope, local, field, checked) or new
        else:
            per = value.values
            for window, field in zip(placement.windows, fields, strict=True):
                one = per.get(window, MISSING)
                if one is not MISSING:
                    new = write(scope, local, field, check(one)) or new
        for window in placement.merged:
            if window != placement.windows[0]:
                write(scope, local, window_field(key_field, window), MISSING)
        if slot.session:
            slot.written.add(key_field)
        elif new:
            slot.tracker.apply(key_field, placement)

    def update(self, key: object, fn: Callable[[V], V]) -> None:
        """``table[key] = fn(table[key])`` in each window of the event (any kind of window)."""
        current: Any = self[key]
        new: Any = current.map(fn) if isinstance(current, PerWindow) else fn(current)
        self[key] = new

    def __delitem__(self, key: object) -> None:
        """Drop ``key``'s current window(s): nothing is emitted for them."""
        scope, local, slot = self._here()
        key_field, placement, _fields = self._placement(local, slot, key)
        for window in (*placement.windows, *placement.merged):
            write(scope, local, window_field(key_field, window), MISSING)

    def __contains__(self, key: object) -> bool:
        _scope, local, slot = self._here()
        key_field, placement, _fields = self._placement(local, slot, key)
        data = local.data
        return any(
            window_field(key_field, w) in data for w in (*placement.windows, *placement.merged)
        )

    def items(self) -> list[tuple[Any, V]]:
        """``((key, window), value)`` of the current partition's stored windows."""
        _scope, local, _slot = self._here()
        out: list[tuple[Any, V]] = []
        for field, value in local.data.items():
            if field != ST_FIELD:
                key_field, window = parse_window_field(field)
                out.append(((key_of_field(key_field), window), value))
        return out

    # -- outside handlers: committed values from Redis ------------------------------------------

    async def read(self, key: object) -> dict[float, V]:  # type: ignore[override]
        """``key``'s open windows, committed: ``{window start (epoch seconds): value}``."""
        stream = self._bound()
        partition = partition_of_field(field_of(key), stream.partitions)
        found = await self.open_windows(partition, key)
        return {window.start: value for _key, window, value in found}

    async def snapshot(self) -> dict[Any, dict[float, V]]:  # type: ignore[override]
        """Every key's open windows, committed (all partitions; tests and small tables)."""
        out: dict[Any, dict[float, V]] = {}
        for partition in range(self._bound().partitions):
            for key, window, value in await self.open_windows(partition):
                out.setdefault(key, {})[window.start] = value
        return out

    async def open_windows(
        self, partition: int, key: object | None = None, *, client: Any = None
    ) -> list[tuple[Any, Window, V]]:
        """The committed open windows of one partition (of one key): ``(key, window, value)``
        sorted by key and start. ``client``: a transport client (default: the system's)."""
        client = client or self.system.client()
        hash_key = self.hash_key(partition)
        key_field = None if key is None else field_of(key)
        pattern = "*" if key_field is None else _glob_escape(key_field) + KEY_SEPARATOR + "*"
        st_raw = await client.execute("HGET", hash_key, ST_FIELD)
        st = None if st_raw is None else int(self.codec.decode(st_raw))
        out: list[tuple[Any, Window, V]] = []
        cursor: Any = b"0"
        while True:
            cursor, flat = await client.execute(
                "HSCAN", hash_key, cursor, "MATCH", pattern, "COUNT", 2000
            )
            for i in range(0, len(flat), 2):
                field = flat[i].decode()
                if field == ST_FIELD:
                    continue
                found_key, window = parse_window_field(field)
                if key_field not in (None, found_key) or self._closed(window, st):
                    continue
                out.append((key_of_field(found_key), window, self.codec.decode(flat[i + 1])))
            if cursor in (b"0", "0", 0):
                break
        return sorted(out, key=lambda item: (str(item[0]), item[1]))

    def _closed(self, window: Window, st: int | None) -> bool:
        return st is not None and window.end_ms + self.window.grace_ms <= st


def write(scope: EventScope, local: PartitionTable, field: str, value: Any) -> bool:
    """Write through to the partition's table (``MISSING`` deletes), keeping the first
    previous value so that the table's scope can undo it if the handler does not return.
    Whether the field held nothing before this call (a window to track)."""
    undo = scope.undo.get(local)
    if undo is None:
        undo = scope.undo[local] = {}
    data = local.data
    if field not in undo:
        old = undo[field] = data.get(field, MISSING)
    else:
        old = undo[field]
    if value is MISSING:
        data.pop(field, None)
    else:
        data[field] = value
    return old is MISSING


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

