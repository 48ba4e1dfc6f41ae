"""Tables: per-key state that lives beside its partition and is committed with the ack.

``system.table("counts", value=int, default=0)`` declares one; an actor that lists it
(``@system.actor(stream, tables=[counts])``) owns it, partitioned like its stream. Inside that
actor's handler the table is a mapping over the current partition; its changes are kept per call
(an ``EventScope``, ``_scope``) and join the partition's pending commit only if the handler
returned, so a handler that raises leaves nothing behind. The commit itself (``_core.commit``)
rides in the transaction of the events' acks.

Why a context variable and not an argument: the handler's signature stays the user's, and a
handler running in its own task (many events in flight) sees its own event's scope.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from ._codecs import get_codec
from ._core import keys as _keys
from ._core.commit import field_of, key_of_field, partition_of_field
from ._core.errors import ConfigError, DecodeError, TableError
from ._records import Record, check_record_type, record_decoder, record_encoder
from ._scope import _SCOPE, MISSING, EventScope, PartitionTable, PartitionTables, current_scope

__all__ = [
    "MISSING",
    "EventScope",
    "PartitionTable",
    "PartitionTables",
    "Table",
    "current_scope",
]

V = TypeVar("V")

SCALARS = (int, float, str, bool)

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
        #: an int's bytes are its decimal text (JSON): the commit hands Redis the int itself
        self.plain_ints = value is int and all(
            self.encode(v) == str(v).encode() for v in (0, -7, _INT_MIN, _UINT_MAX)
        )

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


class Partitioned(Protocol):
    """What a table needs of the stream its writer consumes: the name its keys carry and the
    number of partitions its data is split into, like the stream's."""

    @property
    def name(self) -> str: ...

    @property
    def partitions(self) -> int: ...


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
        self.stream: Partitioned | None = None

    def __repr__(self) -> str:
        owner = f" of actor {self.actor!r}" if self.actor else ""
        return f"<Table {self.name}{owner}>"

    def bind(self, actor: str, stream: Partitioned) -> None:
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

    @property
    def partitions(self) -> int:
        """Its stream's partition count (``TableError`` while no actor writes it)."""
        return self._bound().partitions

    def _bound(self) -> Partitioned:
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
        value = local.data.get(field, MISSING) if local.owners is None else local.before(field)
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
        journal = scope.journal
        if journal is not None:  # one call at a time: the write and the value before it
            old = data.get(field, MISSING)
            if old is MISSING:
                local.check_partition(field)
            journal.append((local, field, old))
            data[field] = value
            return
        undo = scope.undo.get(local)
        if undo is None:
            undo = scope.undo[local] = {}
        if field not in undo:
            old = data.get(field, MISSING)
            if old is MISSING:
                local.check_partition(field)
            if local.owners is not None:
                local.claim(field, scope)
            undo[field] = old
        data[field] = value

    def __delitem__(self, key: object) -> None:
        scope, local = self._local()
        field = key if type(key) is str else field_of(key)
        data = local.data
        if local.before(field) is MISSING:
            local.check_partition(field)
            raise KeyError(key)
        if scope.journal is not None:
            scope.journal.append((local, field, data[field]))
            del data[field]
            return
        undo = scope.undo.setdefault(local, {})
        if field not in undo:
            local.claim(field, scope)
            undo[field] = data[field]
        del data[field]

    def __contains__(self, key: object) -> bool:
        _scope, local = self._local()
        field = key if type(key) is str else field_of(key)
        if local.before(field) is not MISSING:
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
