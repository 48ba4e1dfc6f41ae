"""Tables: per-key state that lives beside its partition and is committed with the ack.

``system.table("counts", value=int, default=0)`` declares one; an actor that lists it
(``@system.actor(stream, tables=[counts])``) owns it, partitioned like its stream. Inside that
actor's handler the table is a mapping over the current partition; its writes are buffered per
event (an ``EventScope``, made current for one handler call) and join the partition's pending
commit only if the handler returned, so a handler that raises leaves nothing behind. The commit
itself (``_core.commit``) rides in the transaction of the events' acks.

Why a context variable and not an argument: the handler's signature stays the user's, and a
handler running in its own task (many events in flight) sees its own event's scope.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._codecs import get_codec
from ._core import keys as _keys
from ._core.commit import PendingCommit, field_of, key_of_field, partition_of_field
from ._core.errors import ConfigError, DecodeError, TableError
from ._records import Record, check_record_type, record_decoder, record_encoder

if TYPE_CHECKING:
    from ._streams import Stream

__all__ = ["EventScope", "PartitionTable", "PartitionTables", "Table", "current_scope"]

V = TypeVar("V")

SCALARS = (int, float, str, bool)
MISSING: Any = object()
_DELETED: Any = object()

_SCOPE: ContextVar[EventScope | None] = ContextVar("actorstream_table_scope", default=None)


def current_scope() -> EventScope | None:
    """The scope of the handler call running in this task, if any."""
    return _SCOPE.get()


class ValueCodec:
    """How one table's values become bytes and back (a registered codec, strict types)."""

    def __init__(self, table: str, value: type[Any], codec: str) -> None:
        self.table = table
        self.value = value
        dumps = get_codec(codec).encode
        loads = get_codec(codec).decode
        if isinstance(value, type) and issubclass(value, Record):
            check_record_type(value)
            to_prim = record_encoder(value)
            from_prim = record_decoder(value)
            self.encode: Callable[[Any], bytes] = lambda v: dumps(to_prim(v))
            self.decode: Callable[[bytes], Any] = lambda b: from_prim(loads(b))
        else:
            self.encode = dumps
            self.decode = self._scalar_decoder(loads)
        #: encoded when the commit is planned: ``check`` made sure it can be
        self.deferred = value in SCALARS

    def _scalar_decoder(self, loads: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        def decode(data: bytes) -> Any:
            value = loads(data)
            try:
                return self.check(value)
            except TypeError as exc:
                raise DecodeError(str(exc), kind="schema") from None

        return decode

    def check(self, value: Any) -> Any:
        """``value`` if the table can hold it (an int is a float for a float table).

        A scalar is also checked encodable here (when it is written, so the handler fails),
        which lets its encoding wait for the commit (``deferred``): ints within 64 bits,
        finite floats, strings that are valid UTF-8.
        """
        kind = self.value
        if type(value) is kind or (
            isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        ):
            pass
        elif kind is float and type(value) is int:
            value = float(value)
        else:
            raise self._wrong_type(value)
        if kind is int and not _INT_MIN <= value <= _UINT_MAX:
            raise ValueError(f"table {self.table!r}: {value} does not fit in 64 bits")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"table {self.table!r}: {value!r} is not a finite float")
        if kind is str:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"table {self.table!r}: not valid UTF-8: {exc}") from None
        return value

    def _wrong_type(self, value: Any) -> TypeError:
        kind = self.value
        return TypeError(
            f"table {self.table!r} holds {kind.__name__} values, got {type(value).__name__} "
            f"{value!r:.80}"
        )


_INT_MIN = -(2**63)
_UINT_MAX = 2**64 - 1


class Table(Generic[V]):
    """A declared table. In a handler of its actor: a mapping over the current partition.

    Outside handlers: ``await table.read(key)`` and ``await table.snapshot()`` (committed
    values, from Redis).
    """

    def __init__(
        self, system: Any, name: str, *, value: type[V], default: Any, codec: str
    ) -> None:
        _keys.check_name("table", name)
        if not (
            value in SCALARS or (isinstance(value, type) and issubclass(value, Record))
        ):
            raise ConfigError(
                f"table {name!r}: value must be int, float, str, bool or a Record subclass "
                f"(immutable, so a change is always an assignment), got {value!r}"
            )
        try:
            self.codec = ValueCodec(name, value, codec)
        except ConfigError as exc:
            raise ConfigError(f"table {name!r}: {exc}") from None
        if default is not MISSING and not callable(default):
            try:
                default = self.codec.check(default)
            except TypeError as exc:
                raise ConfigError(f"table {name!r}: default: {exc}") from None
        self.system = system
        self.name = name
        self.value = value
        self.default = default
        self._int = value is int
        self.actor: str | None = None
        self.stream: Stream[Any] | None = None

    def __repr__(self) -> str:
        owner = f" of actor {self.actor!r}" if self.actor else ""
        return f"<Table {self.name}{owner}>"

    def bind(self, actor: str, stream: Stream[Any]) -> None:
        """Make ``actor`` this table's only writer (partitioned like ``stream``)."""
        self.check_writer(actor)
        self.actor = actor
        self.stream = stream

    def check_writer(self, actor: str) -> None:
        if self.actor is not None and self.actor != actor:
            raise ConfigError(
                f"table {self.name!r} is already written by actor {self.actor!r}; a table has "
                f"one writer: declare another table for actor {actor!r}"
            )

    def hash_key(self, partition: int) -> str:
        stream = self._bound()
        return _keys.table_key(self.system.name, stream.name, partition, self.name)

    def _bound(self) -> Stream[Any]:
        if self.stream is None:
            raise TableError(
                f"table {self.name!r} is not used by any actor: list it in "
                f"@system.actor(stream, tables=[{self.name}])"
            )
        return self.stream

    def make_default(self, field: str) -> Any:
        default = self.default
        if default is MISSING:
            raise KeyError(key_of_field(field))
        if callable(default):
            return self.codec.check(default())
        return default

    # -- in a handler: the current partition ---------------------------------------------------

    def _local(self) -> tuple[EventScope, PartitionTable]:
        scope = _SCOPE.get()
        if scope is None:
            raise self._outside()
        local = scope.tables.get(self)
        if local is None:
            raise self._undeclared(scope)
        return scope, local

    def _outside(self) -> TableError:
        return TableError(
            f"table {self.name!r} used outside a handler: its keys are changed by the "
            f"handler of actor {self.actor or '(none yet)'!r}; elsewhere use "
            f"`await {self.name}.read(key)` or `await {self.name}.snapshot()`"
        )

    def _undeclared(self, scope: EventScope) -> TableError:
        return TableError(
            f"table {self.name!r} is not declared by actor {scope.actor!r}: add it to "
            f"@system.actor(..., tables=[...]) (a table has one writer: "
            f"{self.actor or 'none yet'})"
        )

    # The two methods below run per access on the hot path: the scope lookup is inlined.

    def __getitem__(self, key: object) -> V:
        scope = _SCOPE.get()
        if scope is None:
            raise self._outside()
        local = scope.tables.get(self)
        if local is None:
            raise self._undeclared(scope)
        kind = type(key)
        field: str = key if kind is str else str(key) if kind is int else field_of(key)  # type: ignore[assignment]
        value = local.data.get(field, MISSING)
        if value is MISSING:
            local.check_partition(field)
            return self.make_default(field)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]

    def __setitem__(self, key: object, value: Any) -> None:
        scope = _SCOPE.get()
        if scope is None:
            raise self._outside()
        local = scope.tables.get(self)
        if local is None:
            raise self._undeclared(scope)
        kind = type(key)
        field: str = key if kind is str else str(key) if kind is int else field_of(key)  # type: ignore[assignment]
        if type(value) is not int or not self._int or not _INT_MIN <= value <= _UINT_MAX:
            value = self.codec.check(value)
        data = local.data
        undo = scope.undo.get(local)
        if undo is None:
            undo = scope.undo[local] = {}
        if field not in undo:
            old = data.get(field, MISSING)
            if old is MISSING:
                local.check_partition(field)
            undo[field] = old
        data[field] = value

    def __delitem__(self, key: object) -> None:
        scope, local = self._local()
        field = key if type(key) is str else field_of(key)
        data = local.data
        if field not in data:
            local.check_partition(field)
            raise KeyError(key)
        scope.undo.setdefault(local, {}).setdefault(field, data[field])
        del data[field]

    def __contains__(self, key: object) -> bool:
        _scope, local = self._local()
        field = key if type(key) is str else field_of(key)
        if field in local.data:
            return True
        local.check_partition(field)
        return False

    def get(self, key: object, default: Any = None) -> V | Any:
        """The value of ``key``, or ``default`` (not the table's) when it has none."""
        if key in self:
            return self[key]
        return default

    def setdefault(self, key: object, default: V) -> V:
        if key in self:
            return self[key]
        self[key] = default
        return default

    def items(self) -> list[tuple[str | tuple[str, ...], V]]:
        """The keys and values of the current partition, this event's writes included."""
        _scope, local = self._local()
        return [(key_of_field(f), v) for f, v in local.data.items()]

    def __len__(self) -> int:
        _scope, local = self._local()
        return len(local.data)

    # -- outside handlers: committed values from Redis -----------------------------------------

    async def read(self, key: object) -> V | None:
        """The committed value of ``key`` (the default, or None without one, when missing)."""
        stream = self._bound()
        field = field_of(key)
        partition = partition_of_field(field, stream.partitions)
        data = await self.system.client().execute("HGET", self.hash_key(partition), field)
        if data is None:
            try:
                return self.make_default(field)  # type: ignore[no-any-return]
            except KeyError:
                return None
        return self.codec.decode(data)  # type: ignore[no-any-return]

    async def snapshot(self) -> dict[str | tuple[str, ...], V]:
        """Every committed key and value (all partitions; for tests and small tables)."""
        stream = self._bound()
        client = self.system.client()
        out: dict[str | tuple[str, ...], V] = {}
        for partition in range(stream.partitions):
            cursor: Any = b"0"
            key = self.hash_key(partition)
            while True:
                cursor, flat = await client.execute("HSCAN", key, cursor, "COUNT", 2000)
                for i in range(0, len(flat), 2):
                    out[key_of_field(flat[i].decode())] = self.codec.decode(flat[i + 1])
                if cursor in (b"0", "0", 0):
                    break
        return out


class PartitionTable:
    """One table's keys in one partition, in memory: committed values plus those of events
    handled but not yet committed (dropped together with them, then reloaded)."""

    __slots__ = ("data", "hash_key", "partition", "partitions", "table")

    def __init__(self, table: Table[Any], partition: int) -> None:
        self.table = table
        self.partition = partition
        self.partitions = table._bound().partitions
        self.hash_key = table.hash_key(partition)
        self.data: dict[str, Any] = {}

    def check_partition(self, field: str) -> None:
        if self.partitions == 1:
            return
        owner = partition_of_field(field, self.partitions)
        if owner != self.partition:
            raise TableError(
                f"table {self.table.name!r}: key {key_of_field(field)!r} belongs to partition "
                f"{owner}, this handler runs for partition {self.partition}; a handler changes "
                "only keys of its own partition (key the table like the stream)"
            )


class PartitionTables:
    """The tables of one partition actor and what its handled events have not committed yet.

    ``wrap`` makes a fresh ``EventScope`` current for each handler call; ``EventScope.complete``
    moves its writes here once the handler returned.
    """

    def __init__(
        self, actor: str, partition: int, tables: tuple[Table[Any], ...], *, holds: bool
    ) -> None:
        self.actor = actor
        self.partition = partition
        self.holds = holds  # exactly_once: events sent by the handler are held for the commit
        self.tables = {t: PartitionTable(t, partition) for t in tables}
        self.encoders = {
            local.hash_key: t.codec.encode for t, local in self.tables.items()
            if t.codec.deferred
        }
        self.pending = PendingCommit(self.encoders)
        #: every table holds scalars: nothing to encode per event (``complete_scalars``)
        self.deferred = all(t.codec.deferred for t in self.tables)

    def reset(self) -> None:
        """Forget every value and uncommitted write (before reloading from Redis)."""
        for local in self.tables.values():
            local.data = {}
        self.pending = PendingCommit(self.encoders)

    def keys(self) -> dict[str, int]:
        return {t.name: len(local.data) for t, local in self.tables.items()}

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a handler or a middleware chain) with one event scope per call: what it
        changed is kept if it returned, undone otherwise (an exception or a cancellation)."""
        set_scope, reset_scope = _SCOPE.set, _SCOPE.reset
        owner = self

        async def with_tables(*args: Any) -> Any:
            scope = EventScope(self)
            token = set_scope(scope)
            kept = False
            try:
                result = await fn(*args)
                if scope.undo:
                    if owner.deferred:
                        scope.complete_scalars()
                    else:
                        scope.complete()
                elif scope.outputs:
                    scope.complete()
                kept = True
            finally:
                reset_scope(token)
                if not kept and scope.undo:
                    scope.abort()
            return result

        return with_tables


class EventScope:
    """One handler call's changes: written through to the partition's tables (so reads cost a
    dict lookup), with the first previous value of each key changed kept to undo them if the
    handler does not return; and the events it sent, held (exactly-once)."""

    __slots__ = ("outputs", "owner", "tables", "undo")

    def __init__(self, owner: PartitionTables) -> None:
        self.owner = owner
        self.tables = owner.tables
        #: per table, the value each changed key had before this call (MISSING: none)
        self.undo: dict[PartitionTable, dict[str, Any]] = {}
        self.outputs: list[tuple[Any, ...]] = []

    @property
    def actor(self) -> str:
        return self.owner.actor

    @property
    def holds(self) -> bool:
        """Exactly-once: events sent by the handler are held for the commit."""
        return self.owner.holds

    def hold(self, command: list[Any]) -> None:
        self.outputs.append(tuple(command))

    def abort(self) -> None:
        """Put back what this call changed."""
        for local, undo in self.undo.items():
            data = local.data
            for field, old in undo.items():
                if old is MISSING:
                    data.pop(field, None)
                else:
                    data[field] = old

    def complete(self) -> None:
        """The handler returned: encode what it changed (a value the codec refuses fails the
        event here, before anything is kept) into the partition's pending commit. Scalars were
        checked encodable when written: they are encoded once per commit instead
        (``PendingCommit.encoders``)."""
        pending = self.owner.pending
        staged = self._encoded()
        writes = pending.writes
        for local, undo in self.undo.items():
            held = writes.get(local.hash_key)
            if held is None:
                held = writes[local.hash_key] = {}
            data = local.data
            encoded = staged.get(local)
            for field in undo:
                value = data.get(field)
                held[field] = value if encoded is None or value is None else encoded[field]
        if self.outputs:
            pending.outputs.extend(self.outputs)

    def complete_scalars(self) -> None:
        """``complete`` when every table holds scalars (checked encodable when written)."""
        pending = self.owner.pending
        writes = pending.writes
        for local, undo in self.undo.items():
            held = writes.get(local.hash_key)
            if held is None:
                held = writes[local.hash_key] = {}
            get = local.data.get
            for field in undo:
                held[field] = get(field)
        if self.outputs:
            pending.outputs.extend(self.outputs)

    def _encoded(self) -> dict[PartitionTable, dict[str, bytes]]:
        staged: dict[PartitionTable, dict[str, bytes]] = {}
        for local, undo in self.undo.items():
            codec = local.table.codec
            if codec.deferred:
                continue
            out = staged[local] = {}
            data = local.data
            for field in undo:
                if field not in data:
                    continue
                try:
                    out[field] = codec.encode(data[field])
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"table {local.table.name!r}: cannot store the value of "
                        f"{key_of_field(field)!r}: {exc}"
                    ) from None
        return staged
