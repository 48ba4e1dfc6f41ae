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
from contextvars import ContextVar
from typing import Any, TypeVar

from ._actors import ActorSpec, Form
from ._core.commit import KEY_SEPARATOR, field_of, key_of_field, partition_of_field
from ._core.errors import ConfigError, TableError
from ._core.windows import (
    Hopping,
    Placement,
    Session,
    Window,
    WindowSpec,
    check_spec,
    to_millis,
)
from ._tables import MISSING, EventScope, PartitionTable, Table, ValueCodec

__all__ = ["ST_FIELD", "PerWindow", "StreamTime", "WindowEvent", "WindowedTable", "window_field"]

V = TypeVar("V")

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


class WindowEvent:
    """The handler call's event time and where its keys went (applied if it returned)."""

    __slots__ = ("fresh", "late", "parts", "placements", "t_ms", "written")

    def __init__(self, t_ms: int, parts: dict[WindowedTable[Any], Any]) -> None:
        self.t_ms = t_ms
        self.parts = parts  # table -> its _tree.windows.PartitionWindows
        #: (table, key as the handler gave it) -> (key field, placement, window fields)
        self.placements: dict[
            tuple[WindowedTable[Any], object], tuple[str, Placement, tuple[str, ...]]
        ] = {}
        self.written: set[tuple[WindowedTable[Any], str]] = set()
        self.fresh: set[tuple[WindowedTable[Any], str]] = set()
        self.late: dict[tuple[WindowedTable[Any], str], Placement] = {}


_EVENT: ContextVar[WindowEvent | None] = ContextVar("actorstream_window_event", default=None)


def current_event() -> ContextVar[WindowEvent | None]:
    return _EVENT


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
    ordering = getattr(spec.settings, "ordering", "partition")
    if ordering != "partition":
        raise ConfigError(
            f"actor {spec.name!r}: windowed table(s) {', '.join(windowed)} need "
            f"ordering='partition' (got {ordering!r}): a window closes when stream time passes "
            "it, and every earlier event of the partition must be counted by then"
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

    def _here(self) -> tuple[EventScope, PartitionTable, WindowEvent]:
        scope, local = self._local()
        event = _EVENT.get()
        if event is None or self not in event.parts:
            raise TableError(
                f"table {self.name!r} is windowed: it is addressed by the time of the event "
                "being handled, in a handler (event form) of the actor that declared it"
            )
        return scope, local, event

    def _placement(self, local: PartitionTable, event: WindowEvent, key: object) -> tuple[
        str, Placement, tuple[str, ...]
    ]:  # fmt: skip
        """Where ``key`` goes for this event, and the hash fields of its windows (cached for
        the handler call: the same windows however often the handler touches the key)."""
        try:
            found = event.placements.get((self, key))
        except TypeError:  # unhashable: field_of says what a key may be
            found = None
        if found is None:
            part = event.parts[self]
            fields_of = part.fields_of  # key -> (placement, key field, fields): across events
            hit = fields_of.get(key) if type(key) is str or type(key) is int else None
            if hit is not None and not isinstance(self.window, Session):
                placement = part.tracker.plan(hit[1], event.t_ms)  # time windows: by time
                if placement is hit[0]:
                    key_field, fields = hit[1], hit[2]
                else:
                    hit = None
            if hit is None:
                key_field = key if type(key) is str else field_of(key)
                placement = part.tracker.plan(key_field, event.t_ms)
                fields = tuple(window_field(key_field, w) for w in placement.windows)
                if (type(key) is str or type(key) is int) and not isinstance(
                    self.window, Session
                ):
                    if len(fields_of) >= 65_536:  # bounded: a hint, not state
                        fields_of.clear()
                    fields_of[key] = (placement, key_field, fields)
            data = local.data
            untracked = bool(placement.merged) or not fields
            for field in fields:
                untracked = untracked or field not in data
            if untracked:
                local.check_partition(key_field)
                event.fresh.add((self, key_field))  # windows to track if it writes them
            found = event.placements[self, key] = (key_field, placement, fields)
            if placement.late:
                event.late[self, key_field] = placement
        return found

    def _stored(self, scope: EventScope, local: PartitionTable, field: str) -> Any:
        return local.data.get(field, MISSING)  # written through: this call's writes included

    def _value(
        self, scope: EventScope, local: PartitionTable, key_field: str, placement: Placement,
        field: str,
    ) -> Any:  # fmt: skip
        if placement.merged:  # a session merged from others: its value combines theirs
            fields = [window_field(key_field, w) for w in placement.merged]
            found = [v for f in fields if (v := self._stored(scope, local, f)) is not MISSING]
            if found:
                assert self.merge is not None
                return functools.reduce(self.merge, found)
        else:
            value = self._stored(scope, local, field)
            if value is not MISSING:
                return value
        return self.make_default(field)

    def __getitem__(self, key: object) -> V:
        scope, local, event = self._here()
        key_field, placement, fields = self._placement(local, event, key)
        if isinstance(self.window, Hopping):
            return PerWindow(  # type: ignore[return-value]
                {
                    w: self._value(scope, local, key_field, placement, f)
                    for w, f in zip(placement.windows, fields, strict=True)
                }
            )
        if not fields:  # late: its window closed already
            return self.make_default(key_field)  # type: ignore[no-any-return]
        return self._value(scope, local, key_field, placement, fields[0])  # type: ignore[no-any-return]

    def __setitem__(self, key: object, value: V) -> None:
        scope, local, event = self._here()
        key_field, placement, fields = self._placement(local, event, key)
        if not fields:
            return  # a late event is not counted (it is counted as late)
        check = self.codec.check
        if type(value) is not PerWindow:
            checked = value if type(value) is self.value else check(value)
            for field in fields:
                write(scope, local, field, checked)
        else:
            per = value.values  # type: ignore[attr-defined]
            for window, field in zip(placement.windows, fields, strict=True):
                one = per.get(window, MISSING)
                if one is not MISSING:
                    write(scope, local, field, check(one))
        for window in placement.merged:
            if window != placement.windows[0]:
                write(scope, local, window_field(key_field, window), MISSING)
        event.written.add((self, key_field))

    def update(self, key: object, fn: Callable[[V], V]) -> None:
        """``table[key] = fn(table[key])`` in each window of the event (any kind of window)."""
        current: Any = self[key]
        new: Any = current.map(fn) if isinstance(current, PerWindow) else fn(current)
        self[key] = new

    def __delitem__(self, key: object) -> None:
        """Drop ``key``'s current window(s): nothing is emitted for them."""
        scope, local, event = self._here()
        key_field, placement, _fields = self._placement(local, event, key)
        for window in (*placement.windows, *placement.merged):
            write(scope, local, window_field(key_field, window), MISSING)

    def __contains__(self, key: object) -> bool:
        scope, local, event = self._here()
        key_field, placement, _fields = self._placement(local, event, key)
        return any(
            self._stored(scope, local, window_field(key_field, w)) is not MISSING
            for w in (*placement.windows, *placement.merged)
        )

    def items(self) -> list[tuple[Any, V]]:
        """``((key, window), value)`` of the current partition's stored windows."""
        _scope, local, _event = self._here()
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


def write(scope: EventScope, local: PartitionTable, field: str, value: Any) -> None:
    """Write through to the partition's table (``MISSING`` deletes), keeping the first
    previous value so that the table's scope can undo it if the handler does not return."""
    undo = scope.undo.get(local)
    if undo is None:
        undo = scope.undo[local] = {}
    data = local.data
    if field not in undo:
        undo[field] = data.get(field, MISSING)
    if value is MISSING:
        data.pop(field, None)
    else:
        data[field] = value


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

