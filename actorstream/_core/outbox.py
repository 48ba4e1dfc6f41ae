"""Exactly-once outputs on a Redis Cluster, as data: the outbox and the idempotent forward.

A commit is one MULTI on the node of its partition's slot, so it cannot append to a stream in
another slot. An output whose stream is in the partition's own slot is appended in the commit as
on one Redis; any other output is appended to the partition's **outbox** (a stream under the
partition's hash tag) in the same MULTI, its target stream's key as the first field pair. The
partition actor then **forwards** the outbox: per target stream, one call of the ``forward``
script on the target's node appends the entries in outbox order and moves the target's
**forward mark** for this source (``"<epoch> <last outbox id>"``, a hash field in the target's
slot) in the same script. An entry at or below the mark was appended already: a forward retried
after a crash (or run by a zombie and the new owner both) skips it, so nothing is appended
twice. A mark at a later epoch than the caller's refuses the call (FENCED). Once every target
confirmed, the outbox is trimmed below the next entry (``XTRIM MINID``).

No trio, no sockets: ``_tree/outbox.py`` sends the commands and hands the replies back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import FencedError

__all__ = [
    "TARGET_FIELD",
    "ForwardPlan",
    "ForwardResult",
    "Outbox",
    "OutboxEntry",
    "Replication",
    "after",
    "marks_key",
]

Command = tuple[Any, ...]

#: The first field of an outbox entry names the stream key it goes to (then the event's fields).
TARGET_FIELD = b"@to"


def marks_key(stream_key: str) -> str:
    """The forward marks of a partition stream: a hash beside it (same hash tag, same slot).

    ``as:{app:stream:p}:s`` -> ``as:{app:stream:p}:fwd``.
    """
    head, sep, tail = stream_key.rpartition(":")
    if not sep or tail != "s":
        raise ValueError(f"not a partition stream key: {stream_key!r}")
    return f"{head}:fwd"


def after(entry_id: bytes | str) -> str:
    """The smallest stream id above ``entry_id`` (``XTRIM MINID`` keeps ids from it on)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class Outbox:
    """Routes the outputs of one partition's commits: its own slot's directly, others via its
    outbox. ``local(key)`` says whether a stream key is in the partition's slot (the carrier
    computes slots; this module stays free of hashing for Cluster slots)."""

    __slots__ = ("_local", "_seen", "key")

    def __init__(self, key: str, local: Callable[[str], bool]) -> None:
        self.key = key
        self._local = local
        self._seen: dict[Any, bool] = {}

    def route(self, outputs: list[Command]) -> tuple[list[Command], int]:
        """The commit's commands for held ``XADD key * fields...`` outputs, and how many of
        them went to the outbox."""
        seen = self._seen
        commands: list[Command] = []
        outboxed = 0
        for command in outputs:
            target = command[1]
            local = seen.get(target)
            if local is None:
                key = target.decode() if isinstance(target, bytes) else str(target)
                local = seen[target] = self._local(key)
            if local:
                commands.append(command)
            else:
                commands.append(("XADD", self.key, "*", TARGET_FIELD, target, *command[3:]))
                outboxed += 1
        return commands, outboxed


class OutboxEntry(NamedTuple):
    id: bytes
    target: str
    fields: list[Any]  # the event's field/value pairs, flat


def parse_entries(raw: list[Any]) -> tuple[list[OutboxEntry], list[bytes]]:
    """XRANGE replies of an outbox: its entries, and the ids of entries that are not outbox
    entries (written by hand: they are trimmed with the rest, never forwarded)."""
    entries: list[OutboxEntry] = []
    bad: list[bytes] = []
    for entry_id, flat in raw:
        if not flat or len(flat) < 2 or flat[0] != TARGET_FIELD:
            bad.append(entry_id)
            continue
        target = flat[1].decode() if isinstance(flat[1], bytes) else str(flat[1])
        entries.append(OutboxEntry(entry_id, target, flat[2:]))
    return entries, bad


class ForwardCall(NamedTuple):
    """One ``forward`` script call: the entries of one target stream, in outbox order."""

    target: str
    keys: list[str]
    args: list[Any]
    entries: int


class ForwardPlan(NamedTuple):
    calls: list[ForwardCall]
    last: bytes | None  # the last outbox id read (trim below the one after it when all done)
    skipped: int  # entries that were not outbox entries (trimmed, not forwarded)


class ForwardResult(NamedTuple):
    appended: int
    repeated: int  # entries a previous forward had appended already (skipped by the mark)
    failed: list[str]  # targets whose call failed (the outbox is not trimmed)
    error: Exception | None  # the first failure, to report


def plan_forward(raw: list[Any], source: str, epoch: int) -> ForwardPlan:
    """The script calls that forward an outbox read (``XRANGE`` replies), one per target."""
    entries, bad = parse_entries(raw)
    per_target: dict[str, list[Any]] = {}
    counts: dict[str, int] = {}
    for entry in entries:
        args = per_target.get(entry.target)
        if args is None:
            args = per_target[entry.target] = [source, epoch]
            counts[entry.target] = 0
        args.append(entry.id)
        args.append(len(entry.fields))
        args.extend(entry.fields)
        counts[entry.target] += 1
    calls = [
        ForwardCall(target, [target, marks_key(target)], args, counts[target])
        for target, args in per_target.items()
    ]
    last = raw[-1][0] if raw else None
    return ForwardPlan(calls, last, len(bad))


def on_forward(plan: ForwardPlan, replies: list[Any]) -> ForwardResult:
    """The outcome of the plan's calls (``replies`` in call order). A FENCED reply raises:
    a newer owner of the partition forwards its outbox now."""
    appended = repeated = 0
    failed: list[str] = []
    error: Exception | None = None
    for call, reply in zip(plan.calls, replies, strict=True):
        if isinstance(reply, FencedError):
            raise reply
        if isinstance(reply, Exception):
            failed.append(call.target)
            error = error or reply
            continue
        appended += int(reply[0])
        repeated += int(reply[1])
    return ForwardResult(appended, repeated, failed, error)


class Replication:
    """Which commits of one session (one connection) replicas acknowledged, for
    ``wait_replicas``: a WAIT that reached them covers every earlier write of its connection.

    Commits are numbered when sent. Outbox entries read after commit ``n`` was sent may have
    been written by any commit up to ``n`` (never a later one): they are covered once a WAIT
    sent after ``n`` was acknowledged.
    """

    __slots__ = ("confirmed", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.confirmed = 0

    def send(self) -> int:
        """A commit (or a bare WAIT) is sent: its number."""
        self.sent += 1
        return self.sent

    def confirm(self, number: int) -> None:
        """The WAIT of ``number`` reached the replicas asked for."""
        self.confirmed = max(self.confirmed, number)

    def covers(self, number: int) -> bool:
        return self.confirmed >= number
