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

from collections.abc import Callable, Iterator
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
_MISSING: Any = object()
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

    def _scalar_decoder(self, loads: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        def decode(data: bytes) -> Any:
            value = loads(data)
            try:
                return self.check(value)
            except TypeError as exc:
                raise DecodeError(str(exc), kind="schema") from None

        return decode

    def check(self, value: Any) -> Any:
        """``value`` if the table can hold it (an int is a float for a float table)."""
        kind = self.value
        if type(value) is kind:
            return value
        if kind is float and type(value) is int:
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise TypeError(
            f"table {self.table!r} holds {kind.__name__} values, got {type(value).__name__} "
            f"{value!r:.80}"
        )


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
        if default is not _MISSING and not callable(default):
            try:
                default = self.codec.check(default)
            except TypeError as exc:
                raise ConfigError(f"table {name!r}: default: {exc}") from None
        self.system = system
        self.name = name
        self.value = value
        self.default = default
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
        if default is _MISSING:
            raise KeyError(key_of_field(field))
        if callable(default):
            return self.codec.check(default())
        return default

    # -- in a handler: the current partition ---------------------------------------------------

    def _local(self) -> tuple[EventScope, PartitionTable]:
        scope = _SCOPE.get()
        if scope is None:
            raise TableError(
                f"table {self.name!r} used outside a handler: its keys are changed by the "
                f"handler of actor {self.actor or '(none yet)'!r}; elsewhere use "
                f"`await {self.name}.read(key)` or `await {self.name}.snapshot()`"
            )
        local = scope.tables.get(self)
        if local is None:
            raise TableError(
                f"table {self.name!r} is not declared by actor {scope.actor!r}: add it to "
                f"@system.actor(..., tables=[...]) (a table has one writer: "
                f"{self.actor or 'none yet'})"
            )
        return scope, local

    def __getitem__(self, key: object) -> V:
        scope, local = self._local()
        field = key if type(key) is str else field_of(key)
        written = scope.written.get(local)
        if written is not None:
            value = written.get(field, _MISSING)
            if value is not _MISSING:
                if value is _DELETED:
                    return self.make_default(field)  # type: ignore[no-any-return]
                return value  # type: ignore[no-any-return]
        value = local.data.get(field, _MISSING)
        if value is _MISSING:
            local.check_partition(field)
            return self.make_default(field)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]

    def __setitem__(self, key: object, value: V) -> None:
        scope, local = self._local()
        field = key if type(key) is str else field_of(key)
        if field not in local.data:
            local.check_partition(field)
        checked = value if type(value) is self.value else self.codec.check(value)
        written = scope.written.get(local)
        if written is None:
            scope.written[local] = {field: checked}
        else:
            written[field] = checked

    def __delitem__(self, key: object) -> None:
        scope, local = self._local()
        field = key if type(key) is str else field_of(key)
        if not self._has(scope, local, field):
            raise KeyError(key)
        scope.written.setdefault(local, {})[field] = _DELETED

    def __contains__(self, key: object) -> bool:
        scope, local = self._local()
        return self._has(scope, local, key if type(key) is str else field_of(key))

    def _has(self, scope: EventScope, local: PartitionTable, field: str) -> bool:
        written = scope.written.get(local)
        if written is not None and field in written:
            return written[field] is not _DELETED
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

    def items(self) -> Iterator[tuple[str | tuple[str, ...], V]]:
        """The keys and values of the current partition, this event's writes included."""
        scope, local = self._local()
        written = scope.written.get(local) or {}
        for field, value in local.data.items():
            if field not in written:
                yield key_of_field(field), value
        for field, value in written.items():
            if value is not _DELETED:
                yield key_of_field(field), value

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

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

    ``begin`` makes a fresh ``EventScope`` current for one handler call; ``EventScope.complete``
    moves its writes here once the handler returned.
    """

    def __init__(
        self, actor: str, partition: int, tables: tuple[Table[Any], ...], *, holds: bool
    ) -> None:
        self.actor = actor
        self.partition = partition
        self.holds = holds  # exactly_once: events sent by the handler are held for the commit
        self.tables = {t: PartitionTable(t, partition) for t in tables}
        self.pending = PendingCommit()

    def reset(self) -> None:
        """Forget every value and uncommitted write (before reloading from Redis)."""
        for local in self.tables.values():
            local.data = {}
        self.pending = PendingCommit()

    def keys(self) -> dict[str, int]:
        return {t.name: len(local.data) for t, local in self.tables.items()}

    def begin(self) -> tuple[EventScope, Any]:
        scope = EventScope(self)
        return scope, _SCOPE.set(scope)

    @staticmethod
    def end(token: Any) -> None:
        _SCOPE.reset(token)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a handler or a middleware chain) with one event scope per call."""
        begin, end = self.begin, self.end

        async def with_tables(*args: Any) -> Any:
            scope, token = begin()
            try:
                result = await fn(*args)
                scope.complete()
            finally:
                end(token)
            return result

        return with_tables


class EventScope:
    """One handler call's buffered table writes and held outputs."""

    __slots__ = ("actor", "holds", "outputs", "owner", "tables", "written")

    def __init__(self, owner: PartitionTables) -> None:
        self.owner = owner
        self.actor = owner.actor
        self.tables = owner.tables
        self.holds = owner.holds
        self.written: dict[PartitionTable, dict[str, Any]] = {}
        self.outputs: list[tuple[Any, ...]] = []

    def hold(self, command: list[Any]) -> None:
        self.outputs.append(tuple(command))

    def complete(self) -> None:
        """The handler returned: encode its writes (a value the codec refuses fails the event
        here, before anything is kept), then apply them to the partition's tables and its
        pending commit."""
        if not self.written and not self.outputs:
            return
        encoded: list[tuple[str, dict[str, bytes | None]]] = []
        for local, fields in self.written.items():
            encode = local.table.codec.encode
            out: dict[str, bytes | None] = {}
            for field, value in fields.items():
                if value is _DELETED:
                    out[field] = None
                    continue
                try:
                    out[field] = encode(value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"table {local.table.name!r}: cannot store the value of "
                        f"{key_of_field(field)!r}: {exc}"
                    ) from None
            encoded.append((local.hash_key, out))
        for local, fields in self.written.items():
            data = local.data
            for field, value in fields.items():
                if value is _DELETED:
                    data.pop(field, None)
                else:
                    data[field] = value
        self.owner.pending.add(encoded, self.outputs)
