"""The per-call side of tables: a partition's tables in memory and one handler call's changes.

``PartitionTables.wrap`` makes a fresh ``EventScope`` current (a context variable, so a handler
running in its own task sees its own call's scope) for each handler call. Changes go through to
the in-memory table with an undo log; they join the partition's pending commit
(``_core.commit``) only if the call returned, and are undone otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from ._core.commit import PendingCommit, key_of_field, partition_of_field
from ._core.errors import TableError

__all__ = ["EventScope", "PartitionTable", "PartitionTables", "current_scope"]

MISSING: Any = object()
_DELETED: Any = object()

_SCOPE: ContextVar[EventScope | None] = ContextVar("actorstream_table_scope", default=None)


def current_scope() -> EventScope | None:
    """The scope of the handler call running in this task, if any."""
    return _SCOPE.get()


class StoredValues(Protocol):
    """How a table's values are stored (``deferred``: scalars the commit itself encodes)."""

    @property
    def deferred(self) -> bool: ...

    def encode(self, value: Any, /) -> bytes: ...

    def decode(self, data: bytes, /) -> Any: ...


class ScopedTable(Protocol):
    """What an event's scope needs of a table it writes: its name (for errors), how its values
    are stored, and where its data lives: one hash per partition of its stream."""

    @property
    def name(self) -> str: ...

    @property
    def codec(self) -> StoredValues: ...

    @property
    def partitions(self) -> int: ...

    def hash_key(self, partition: int) -> str: ...


class PartitionTable:
    """One table's keys in one partition, in memory: committed values plus those of events
    handled but not yet committed (dropped together with them, then reloaded)."""

    __slots__ = ("data", "hash_key", "owners", "partition", "partitions", "table", "windows")

    def __init__(self, table: ScopedTable, partition: int, *, concurrent: bool = False) -> None:
        self.table = table
        self.partition = partition
        self.partitions = table.partitions
        self.hash_key = table.hash_key(partition)
        self.data: dict[str, Any] = {}
        #: with events in flight at once: which call changed a key and has not finished
        self.owners: dict[str, EventScope] | None = {} if concurrent else None
        #: a windowed table's event windows (``_windows.EventWindows``), set at run time
        self.windows: Any = None

    def before(self, field: str) -> Any:
        """What ``field`` held before a call in flight changed it (another call reads that:
        as if it ran first), or its value."""
        owners = self.owners
        if owners:
            owner = owners.get(field)
            if owner is not None and owner is not _SCOPE.get():
                return owner.undo[self].get(field, MISSING)
        return self.data.get(field, MISSING)

    def claim(self, field: str, scope: EventScope) -> None:
        """``scope`` changes ``field``: refused while another call in flight has changed it."""
        owners = self.owners
        if owners is None:
            return
        owner = owners.setdefault(field, scope)
        if owner is not scope:
            raise TableError(
                f"table {self.table.name!r}: key {key_of_field(field)!r} is being changed by "
                "another event in flight; with ordering='key' a handler changes only keys no "
                "other event changes at the same time (its own event's key), or use "
                "ordering='partition'"
            )

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
        self,
        actor: str,
        partition: int,
        tables: tuple[ScopedTable, ...],
        *,
        holds: bool,
        concurrent: bool = False,
        resp: bool = False,
    ) -> None:
        self.actor = actor
        self.partition = partition
        self.holds = holds  # exactly_once: events sent by the handler are held for the commit
        #: ... in RESP (on one Redis; a Cluster's outbox routes their commands by key)
        self.resp = resp
        self.concurrent = concurrent  # calls in flight at once (``PartitionTable.owners``)
        self.tables = {
            t: PartitionTable(t, partition, concurrent=concurrent) for t in tables
        }
        #: the tables whose values are encoded when the commit is planned (not those of ints
        #: stored as their decimal text: the transport writes an int so)
        self.encoders: dict[str, Callable[[Any], bytes]] = {
            local.hash_key: t.codec.encode for t, local in self.tables.items()
            if t.codec.deferred and not getattr(t.codec, "plain_ints", False)
        }
        self.single = next(iter(self.tables.values())) if len(self.tables) == 1 else None
        self.pending = PendingCommit(self.encoders, self.single)
        #: every table holds scalars: nothing to encode per event (``complete_scalars``)
        self.deferred = all(t.codec.deferred for t in self.tables)
        #: one call at a time and scalar values: a call's changed fields join the pending
        #: commit as they are, their values read when it is planned (``PendingCommit.changed``)
        self.journal = self.deferred and not concurrent
        #: ... and no windowed table (whose writes keep to ``undo``, see ``_tree.windows``):
        #: each write of a call is one entry of its journal (``EventScope.journal``)
        self.logged = self.journal and not any(
            getattr(t, "window", None) is not None for t in tables
        )
        #: the scope reused by calls that run alone (``wrap``); None while one is running
        self.spare: EventScope | None = EventScope(self)

    def reset(self) -> None:
        """Forget every value and uncommitted write (before reloading from Redis)."""
        for local in self.tables.values():
            local.data = {}
        self.pending = PendingCommit(self.encoders, self.single)

    def keys(self) -> dict[str, int]:
        return {t.name: len(local.data) for t, local in self.tables.items()}

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a handler or a middleware chain) with one event scope per call: what it
        changed is kept if it returned, undone otherwise (an exception or a cancellation).

        Nested (the handler inside its middleware chain, both wrapped): the inner call's
        changes join the outer call's, so a handler that raised leaves nothing behind even when
        a middleware catches its exception, and a middleware that raises after the handler
        returned undoes the handler's changes too.

        A call that starts while no other call of this partition is running (every call,
        one event at a time) reuses one scope, emptied when it ends: the hot path allocates
        nothing per event. Calls in flight at once, and nested calls, get their own."""
        set_scope, reset_scope = _SCOPE.set, _SCOPE.reset
        owner = self
        general = self._wrap_general(fn)

        async def with_tables(*args: Any) -> Any:
            scope = owner.spare
            if scope is None:  # in use: by a call in flight, or by the call around this one
                return await general(*args)
            owner.spare = None
            token = set_scope(scope)
            kept = False
            try:
                result = await fn(*args)
                if scope.journal or scope.undo or scope.outputs:
                    owner.keep(scope)
                kept = True
            finally:
                reset_scope(token)
                if not kept:
                    owner.drop(scope)
                owner.spare = scope
            return result

        return with_tables

    def enter(self) -> tuple[EventScope, Any] | None:
        """For a loop that calls the bare handler one event at a time (``Handling``): make the
        reused scope current until ``leave``, instead of ``wrap``'s per-call wrapper. The loop
        calls ``keep`` after each call that returned and ``drop`` after each that did not
        (and before anything else may run a handler: ``leave`` first). None while the scope
        is in use (then the loop calls the wrapped handler)."""
        scope = self.spare
        if scope is None or self.concurrent:
            return None
        self.spare = None
        return scope, _SCOPE.set(scope)

    def leave(self, entered: tuple[EventScope, Any]) -> None:
        """End ``enter``: what the scope holds was not kept (the call did not return), so it
        is undone; the scope is free again."""
        scope, token = entered
        _SCOPE.reset(token)
        if scope.journal or scope.undo or scope.outputs:
            self.drop(scope)
        self.spare = scope

    def keep(self, scope: EventScope) -> None:
        """The call of the reused ``scope`` returned: what it did joins the pending commit
        (a value the codec refuses raises here, before anything is kept); the scope is
        emptied."""
        undo = scope.undo
        if undo and not self.journal:
            if self.deferred:
                scope.complete_scalars()  # its outputs too
            else:
                scope.complete()  # its outputs too
        else:
            pending = self.pending
            journal = scope.journal
            if journal:
                pending.journal.extend(journal)
                journal.clear()
            if undo:
                pending.changed.append(undo)
            if scope.outputs:
                pending.outputs.extend(scope.outputs)
        if undo:
            scope.undo = {}
        if scope.outputs:
            scope.outputs = []

    def drop(self, scope: EventScope) -> None:
        """The call of the reused ``scope`` did not return: undo it; the scope is emptied."""
        if scope.undo or scope.journal:
            scope.abort()
            scope.undo = {}
        if scope.outputs:
            scope.outputs = []

    def _wrap_general(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``wrap`` with a fresh scope per call (calls in flight at once, nested calls)."""
        set_scope, reset_scope, get_scope = _SCOPE.set, _SCOPE.reset, _SCOPE.get
        owner = self

        async def with_tables(*args: Any) -> Any:
            parent = get_scope()
            scope = EventScope(self)
            token = set_scope(scope)
            kept = False
            try:
                result = await fn(*args)
                if parent is not None and parent.owner is owner:
                    parent.absorb(scope)
                elif scope.journal:
                    owner.keep(scope)
                elif scope.undo:
                    if owner.deferred:
                        scope.complete_scalars()
                    else:
                        scope.complete()
                elif scope.outputs:
                    scope.complete()
                kept = True
            finally:
                reset_scope(token)
                if not kept and (scope.undo or scope.journal):
                    scope.abort()
            return result

        return with_tables


class EventScope:
    """One handler call's changes: written through to the partition's tables (so reads cost a
    dict lookup), with the first previous value of each key changed kept to undo them if the
    handler does not return; and the events it sent, held (exactly-once)."""

    __slots__ = ("holds", "journal", "outputs", "owner", "resp", "tables", "undo")

    def __init__(self, owner: PartitionTables) -> None:
        self.owner = owner
        self.tables = owner.tables
        #: per table, the value each changed key had before this call (MISSING: none)
        self.undo: dict[PartitionTable, dict[str, Any]] = {}
        #: one call at a time, scalar tables (``PartitionTables.logged``): each write as
        #: (table, field, the value before it), in order, instead of ``undo``; else None
        self.journal: list[tuple[PartitionTable, str, Any]] | None = [] if owner.logged else None
        #: exactly-once: events sent by the handler are held here (their XADD commands, in
        #: order) for the commit: in RESP already (``bytes``) when ``resp`` (one Redis)
        self.holds = owner.holds
        self.resp = owner.resp
        self.outputs: list[Any] = []

    @property
    def actor(self) -> str:
        return self.owner.actor

    def absorb(self, inner: EventScope) -> None:
        """A nested call returned: its changes become this call's (kept or undone with it)."""
        if inner.journal:
            assert self.journal is not None  # the same partition's: the same kind of scope
            self.journal.extend(inner.journal)
        for local, undo in inner.undo.items():
            mine = self.undo.setdefault(local, {})
            owners = local.owners
            for field, old in undo.items():
                mine.setdefault(field, old)
                if owners is not None:
                    owners[field] = self
        self.outputs.extend(inner.outputs)

    def abort(self) -> None:
        """Put back what this call changed."""
        journal = self.journal
        if journal:
            for local, field, old in reversed(journal):  # the first old value is put back last
                if old is MISSING:
                    local.data.pop(field, None)
                else:
                    local.data[field] = old
            journal.clear()
        for local, undo in self.undo.items():
            data = local.data
            for field, old in undo.items():
                if old is MISSING:
                    data.pop(field, None)
                else:
                    data[field] = old
        self.release()

    def release(self) -> None:
        """This call is over: others may change the keys it changed."""
        if not self.owner.concurrent:
            return
        for local, undo in self.undo.items():
            owners = local.owners
            if owners:
                for field in undo:
                    if owners.get(field) is self:
                        del owners[field]

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
        self.release()

    def complete_scalars(self) -> None:
        """``complete`` when every table holds scalars (checked encodable when written)."""
        pending = self.owner.pending
        for local, undo in self.undo.items():
            pending.hold_values(local.hash_key, local.data, undo)
        if self.outputs:
            pending.outputs.extend(self.outputs)
        self.release()

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
