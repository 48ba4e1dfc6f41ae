"""The commit of a partition as data: what handled events did, as the commands of one fenced
transaction. No trio, no sockets (like ``protocol``): ``_tree/link.py`` places the commands
inside the MULTI of its next read round trip, before the XACK of the same events, so table
writes, held outputs and acks are applied all together or not at all.

Written values are absolute (HSET of the new value, never HINCRBY): a commit whose outcome is
known to have failed can be retried as it is. One whose outcome is unknown (the connection broke
mid round trip) is never retried: the partition drops what it holds and reloads from Redis.

Table keys become hash fields by the partitioning rules of ``hashing``: a str as is, an int in
decimal (``1`` and ``"1"`` are one key, as they share a partition), a UUID as its canonical
text, an Enum by its value; a tuple ``(k, *rest)`` (a key with parts, such as a window of a key)
joins its parts with ``KEY_SEPARATOR`` and belongs to the partition of ``k``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .hashing import partition_for
from .outbox import Outbox

__all__ = [
    "KEY_SEPARATOR",
    "CommitPlan",
    "PendingCommit",
    "field_of",
    "key_of_field",
    "partition_of_field",
]

Command = tuple[Any, ...]

#: Joins the parts of a tuple key into one hash field (a unit separator: never in a sane key).
KEY_SEPARATOR = "\x1f"


def _part(key: object) -> str:
    if type(key) is str:
        return key
    if isinstance(key, bool):
        raise TypeError("a table key cannot be a bool (True would be the key 1)")
    if isinstance(key, enum.Enum):
        return _part(key.value)
    if isinstance(key, str):
        return str(key)
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, uuid.UUID):
        return str(key)
    raise TypeError(
        f"a table key must be a str, int, UUID, an Enum of those, or a tuple of them, "
        f"got {type(key).__name__}"
    )


def field_of(key: object) -> str:
    """The hash field of a table key (the rules are in the module docstring)."""
    if type(key) is str:
        return key
    if isinstance(key, tuple):
        if not key:
            raise TypeError("a table key cannot be an empty tuple")
        parts = [_part(k) for k in key]
        if any(KEY_SEPARATOR in p for p in parts[:-1]):
            raise TypeError("a part of a tuple table key cannot contain '\\x1f'")
        return KEY_SEPARATOR.join(parts)
    return _part(key)


def key_of_field(field: str) -> str | tuple[str, ...]:
    """A hash field back as a key: a str, or a tuple of str for a key with parts."""
    if KEY_SEPARATOR in field:
        return tuple(field.split(KEY_SEPARATOR))
    return field


def partition_of_field(field: str, partitions: int) -> int:
    """The partition a table key belongs to: that of its first part."""
    head, _, _ = field.partition(KEY_SEPARATOR)
    return partition_for(head, partitions)


class CommitPlan(NamedTuple):
    """The commands of one commit (to run inside a MULTI) and what they carry.

    A NamedTuple (like ``protocol.ReadPlan``): built on the hot path, once per round trip.
    """

    commands: list[Command]
    writes: int  # hash fields set or deleted
    outputs: int  # events appended (XADD)
    outboxed: int = 0  # of those, appended to the outbox (to be forwarded: a Redis Cluster)


class PendingCommit:
    """What handled events of one partition did that Redis does not know yet.

    Table writes are coalesced per hash field (the last write of a batch wins: values are
    absolute); held outputs keep their order. A written value is bytes (encoded already), None
    (delete the field) or a value that ``encoders[hash key]`` turns into bytes when the commit
    is planned (once per field and commit, not per event: for values checked encodable when
    written). ``take`` hands them over for one round trip and
    starts afresh, so events completing during the round trip land in the next one;
    ``restore`` puts back a commit Redis refused as a whole (nothing of it was applied).
    """

    __slots__ = ("changed", "encoders", "outputs", "writes")

    def __init__(self, encoders: dict[str, Callable[[Any], bytes]] | None = None) -> None:
        #: hash key -> field -> encoded value (or a value to encode), or None to delete it
        self.writes: dict[str, dict[str, Any]] = {}
        self.outputs: list[Command] = []
        #: fields changed by handled events whose values are read when the commit is planned
        #: (per event: table -> field -> anything): see ``changed``
        self.changed: list[dict[Any, dict[str, Any]]] = []
        self.encoders = encoders if encoders is not None else {}

    def __bool__(self) -> bool:
        return bool(self.writes) or bool(self.outputs) or bool(self.changed)

    def add(
        self,
        writes: Iterable[tuple[str, dict[str, Any]]],
        outputs: Iterable[Command] = (),
    ) -> None:
        """One handled event's writes (per hash) and outputs, in the order it completed."""
        mine = self.writes
        for hash_key, fields in writes:
            held = mine.get(hash_key)
            if held is None:
                mine[hash_key] = dict(fields)
            else:
                held.update(fields)
        self.outputs.extend(outputs)

    def take(self) -> PendingCommit:
        """Hand over what is held (for one round trip); this one starts empty."""
        taken = PendingCommit(self.encoders)
        taken.writes, self.writes = self.writes, {}
        taken.outputs, self.outputs = self.outputs, []
        taken.changed, self.changed = self.changed, []
        return taken

    def restore(self, taken: PendingCommit) -> None:
        """Put back a commit that was refused as a whole, before what came after it."""
        later = self.take()
        self.writes, self.outputs, self.changed = taken.writes, taken.outputs, taken.changed
        self.add(later.writes.items(), later.outputs)
        self.changed.extend(later.changed)

    def _read_changed(self) -> None:
        """Turn the changed fields into writes of their values now (None: deleted).

        For tables whose values are only ever changed by one handler call at a time: when
        the commit is planned no call is running, so a table's data holds exactly what the
        handled events left (a call that failed was undone). Recording a changed field costs
        one list append per event; its value is read once per commit (the fields of all
        events merged per table first).
        """
        merged: dict[Any, dict[str, Any]] = {}  # per table, every changed field
        for change in self.changed:
            for table, fields in change.items():
                held = merged.get(table)
                if held is None:
                    merged[table] = dict(fields)
                else:
                    held.update(fields)
        for table, fields in merged.items():
            self.hold_values(table.hash_key, table.data, fields)
        self.changed = []

    def hold_values(self, hash_key: str, data: Mapping[str, Any], fields: Iterable[str]) -> None:
        """Hold the values ``fields`` have in ``data`` now (None: deleted) for ``hash_key``."""
        held = self.writes.get(hash_key)
        if held is None:
            held = self.writes[hash_key] = {}
        get = data.get
        for field in fields:
            held[field] = get(field)

    def plan(self, outbox: Outbox | None = None) -> CommitPlan:
        """The commands: per hash one HSET of its set fields and one HDEL of its deleted ones,
        then the outputs in order (through ``outbox`` when given: on a Redis Cluster, outputs
        to another slot than the partition's go to its outbox, ``_core/outbox.py``)."""
        if self.changed:
            self._read_changed()
        commands: list[Command] = []
        count = 0
        for hash_key, fields in self.writes.items():
            sets: list[Any] = []
            deletes: list[str] = []
            encode = self.encoders.get(hash_key)
            for field, value in fields.items():
                if value is None:
                    deletes.append(field)
                else:
                    sets.append(field)
                    sets.append(value if type(value) is bytes or encode is None
                                else encode(value))
            if sets:
                commands.append(("HSET", hash_key, *sets))
            if deletes:
                commands.append(("HDEL", hash_key, *deletes))
            count += len(fields)
        if outbox is None or not self.outputs:
            commands.extend(self.outputs)
            return CommitPlan(commands, count, len(self.outputs))
        routed, outboxed = outbox.route(self.outputs)
        commands.extend(routed)
        return CommitPlan(commands, count, len(self.outputs), outboxed)


def first_commit_error(plan: CommitPlan, replies: list[Any]) -> Exception | None:
    """A command of an executed commit that Redis failed at run time (MULTI does not roll back
    the others: the commit was applied in part, so it must never be retried)."""
    for reply in replies[: len(plan.commands)]:
        if isinstance(reply, Exception):
            return reply
    return None
