"""The partition protocol as data: the commands of a partition's next fenced round trip, and
the frozen result of its replies. No trio, no sockets (h11-style): ``_tree/link.py`` only sends
the commands and hands the replies back, so every decision is tested without Redis.

One partition actor holds one lease epoch. Its round trips:

- **watch** (when its connection does not watch the epoch key yet): ``WATCH epoch, GET epoch``.
  The GET confirms the key still holds our epoch; otherwise we are fenced (and an epoch lower
  than ours means Redis lost data: an epoch regression).
- **read** (the hot path, one per batch): ``MULTI, [commit], [XACK acks], XREADGROUP,
  XPENDING | XREVRANGE, EXEC, WATCH epoch, GET epoch, [WAIT]``. The commit (``commit``: the
  table writes and held outputs of the events acked) is applied with their acks or not at
  all. Redis aborts the EXEC if the epoch changed since the WATCH (fenced); the trailing
  WATCH + GET re-arm the check for the next batch. Acks of handled events
  ride on it, so there is no round trip per event. ``count=0`` is an ack-only round trip.
- **wait and read** (an idle partition): ``XREAD BLOCK`` after the last id read, then the read's
  transaction (no XREVRANGE: the wake gives the tail), in one write.
- **claim**: the fenced ``claim`` script (XAUTOCLAIM of a previous owner's pending entries).
- **dead-letter move**: the fenced ``deadletter`` script's keys and arguments.

Reading history (``start`` is an id, not ``>``) replays our own pending entries with their
delivery counts (XPENDING); an entry whose fields are gone was trimmed or deleted while pending:
the result lists it under ``trimmed`` (to ack away), not under ``entries``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
from attrs import frozen
from redis import exceptions as rex

from . import keys
from .commit import CommitPlan, first_commit_error
from .deadletter import DeadLetter, GivenUp
from .errors import CommitError
from .fence import Fenced, Notice

__all__ = [
    "ClaimResult",
    "Fenced",
    "PartitionProtocol",
    "ReadPlan",
    "ReadResult",
    "ScriptCall",
]

Command = tuple[Any, ...]
class ReadPlan(NamedTuple):
    """One read round trip: the pipeline to send and what the replies will hold.

    A NamedTuple, not an attrs class (like ``ReadResult``): built once per batch on the hot
    path, where a frozen attrs instance cost several times more to construct.
    """

    commands: list[Command | bytes]  # (bytes: packed already, ``PartitionProtocol.pack``)
    acks: int  # how many ack ids ride on it
    limit: int  # entries asked for (COUNT); 0: ack only
    history: bool  # replaying our own pending entries (XPENDING gives delivery counts)
    commit: CommitPlan | None = None  # table writes and held outputs, before the acks
    wait: int = 0  # replicas to WAIT for after a commit (0: no WAIT)
    blocks: bool = False  # led by a side-effect-free XREAD BLOCK (``plan_wait_read``)
    after: bytes | None = None  # ``blocks``: the id it waits after (the tail if none came)


class ReadResult(NamedTuple):
    """What one read round trip did (immutable; a NamedTuple for speed, see ``ReadPlan``).

    ``error`` (a Redis error reply) or ``fenced`` set: nothing was acked or read, except that an
    OOM refusal with ``ack_only_retry`` asks the carrier to send the acks alone (XACK is allowed
    under maxmemory; XREADGROUP is not), then raise. ``watching`` says whether the connection
    still watches our epoch (if not, the next read re-watches and so re-checks the epoch).
    """

    entries: list[Any]  # [(id, [field, value, ...])], in id order; trimmed ones left out
    deliveries: dict[bytes, int]  # history only: delivery count of each entry returned
    trimmed: tuple[bytes, ...]  # history only: pending ids whose entry is gone (ack them away)
    last: bytes | None  # history only: the last pending id returned (trimmed or not)
    tail: bytes | None  # new entries only, none found: the stream's last id (b"0-0" if empty)
    acked: int  # ack ids confirmed by this round trip (0 when none rode or it failed)
    notices: tuple[Notice, ...]
    watching: bool
    fenced: Fenced | None = None
    error: Exception | None = None
    ack_only_retry: bool = False
    #: a commit was executed but Redis failed part of it at run time: never retry it
    partial: bool = False

    def raise_for_failure(self) -> None:
        if self.fenced is not None:
            raise self.fenced.error()
        if self.error is not None:
            raise self.error


@frozen
class ScriptCall:
    """A fenced Lua script call: which script (by name), its keys and arguments."""

    script: str
    keys: list[str]
    args: list[Any]


@frozen
class ClaimResult:
    """One claim step: where to continue (None: done) and pending ids found deleted."""

    cursor: bytes | str | None
    claimed: int
    trimmed: int
    notices: tuple[Notice, ...]



def _as_is(command: Command) -> Command:
    return command


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be an integer >= 0, got {value!r}")


def _first_error(replies: list[Any]) -> Exception | None:
    for reply in replies:
        if isinstance(reply, Exception):
            return reply
    return None


def _failed(
    watching: bool,
    *,
    fenced: Fenced | None = None,
    error: Exception | None = None,
    ack_only_retry: bool = False,
    notices: tuple[Notice, ...] = (),
    partial: bool = False,
) -> ReadResult:
    return ReadResult(
        entries=[], deliveries={}, trimmed=(), last=None, tail=None, acked=0,
        notices=notices, watching=watching, fenced=fenced, error=error,
        ack_only_retry=ack_only_retry, partial=partial,
    )


@frozen
class PartitionProtocol:
    """The round trips of one (actor, partition, epoch) as commands in and results out."""

    app: str
    stream: str
    partition: int
    group: str
    consumer: str
    epoch: int = attrs.field(validator=_non_negative)
    #: Turns a command into RESP (the transport's ``pack``): the read's constant commands are
    #: then packed once, here, instead of per round trip. None (a Cluster's slot connection
    #: routes by reading the commands): tuples.
    pack: Callable[[Command], bytes] | None = attrs.field(default=None, eq=False, repr=False)
    # Derived once at construction: the hot path reads them per batch.
    label: str = attrs.field(init=False)
    stream_key: str = attrs.field(init=False)
    epoch_key: str = attrs.field(init=False)
    epoch_bytes: bytes = attrs.field(init=False)
    lease_key: str = attrs.field(init=False)
    consumer_bytes: bytes = attrs.field(init=False)
    # The read's commands that never change (packed if ``pack``): MULTI; EXEC, WATCH, GET;
    # the tail's XREVRANGE; the XREADGROUP of new entries, by COUNT (filled as counts come).
    _multi: Command | bytes = attrs.field(init=False, eq=False, repr=False)
    _closing: tuple[Command | bytes, ...] = attrs.field(init=False, eq=False, repr=False)
    _tail: Command | bytes = attrs.field(init=False, eq=False, repr=False)
    _reads: dict[int, Command | bytes] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        stream_key = keys.stream_key(self.app, self.stream, self.partition)
        epoch_key = keys.epoch_key(self.app, self.stream, self.partition, self.group)
        pack: Callable[[Command], Command | bytes] = self.pack or _as_is
        closing = (("EXEC",), ("WATCH", epoch_key), ("GET", epoch_key))
        derived: dict[str, object] = {
            "label": f"{self.group}[{self.partition}]",
            "stream_key": stream_key,
            "epoch_key": epoch_key,
            "epoch_bytes": str(self.epoch).encode(),
            "lease_key": keys.lease_key(self.app, self.stream, self.partition, self.group),
            "consumer_bytes": self.consumer.encode(),
            "_multi": pack(("MULTI",)),
            "_closing": tuple(pack(c) for c in closing),
            "_tail": pack(("XREVRANGE", stream_key, "+", "-", "COUNT", 1)),
            "_reads": {},
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def _read_new(self, count: int) -> Command | bytes:
        """The XREADGROUP of up to ``count`` new entries (made once per count)."""
        read: Command = (
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
            "STREAMS", self.stream_key, ">",
        )
        command = read if self.pack is None else self.pack(read)
        if len(self._reads) < 64:  # (a handful of counts in practice)
            self._reads[count] = command
        return command

    # -- watch ---------------------------------------------------------------------------------

    def watch_commands(self) -> list[Command]:
        epoch_key = self.epoch_key
        return [("WATCH", epoch_key), ("GET", epoch_key), ("GET", self.lease_key)]

    def on_watch(self, replies: list[Any]) -> Fenced | None:
        """None: watching our epoch. Raises a Redis error reply (nothing happened yet).

        The lease must be ours too: after Redis lost data, epochs start again from 1 and
        another worker can acquire the very epoch number we hold. The lease key itself is not
        watched (every renewal would abort our transactions): a new owner changes the epoch.
        """
        error = _first_error(replies)
        if error is not None:
            raise error
        if replies[1] != self.epoch_bytes:
            return Fenced(self.epoch, int(replies[1] or 0), self.label)
        if replies[2] != self.consumer_bytes:
            holder = "nobody's" if replies[2] is None else f"held by {replies[2].decode()}"
            return Fenced(self.epoch, self.epoch, self.label, holder=holder)
        return None

    # -- read ----------------------------------------------------------------------------------

    def plan_read(
        self,
        acks: list[bytes],
        start: bytes | str,
        count: int,
        commit: CommitPlan | None = None,
        wait: tuple[int, int] | None = None,
    ) -> ReadPlan:
        """The pipeline of one read: commit, ack ``acks``, read ``count`` entries after ``start``.

        ``start`` is ``">"`` for new entries, else a pending id to replay after (history).
        ``commit`` (the writes and outputs of the events acked) goes first in the transaction;
        ``wait`` (replicas, milliseconds) adds a WAIT after a non-empty commit.
        """
        return self._plan_read(acks, start, count, commit, wait, None)

    def _plan_read(
        self,
        acks: list[bytes],
        start: bytes | str,
        count: int,
        commit: CommitPlan | None,
        wait: tuple[int, int] | None,
        woken_by: Command | None,
    ) -> ReadPlan:
        stream_key = self.stream_key
        commands: list[Command | bytes] = (
            [self._multi] if woken_by is None else [woken_by, self._multi]
        )
        if commit is not None and commit.commands:
            commands += commit.commands
        else:
            commit = None
        if acks:
            commands.append(("XACK", stream_key, self.group, *acks))
        history = start != ">"
        if count:
            if history:
                start_id = start.decode() if isinstance(start, bytes) else start
                commands.append(
                    ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                     "STREAMS", stream_key, start)
                )
                commands.append(
                    ("XPENDING", stream_key, self.group, f"({start_id}", "+", count,
                     self.consumer)
                )
            else:
                commands.append(self._reads.get(count) or self._read_new(count))
                if woken_by is None:  # (a wake's tail is known without it: ``on_read``)
                    commands.append(self._tail)
        commands += self._closing
        replicas = 0
        if wait is not None and commit is not None and wait[0] > 0:
            replicas = wait[0]
            commands.append(("WAIT", replicas, wait[1]))
        if woken_by is None:
            return ReadPlan(commands, len(acks), count, history, commit, replicas)
        tail = woken_by[-1]
        after = tail if isinstance(tail, bytes) else str(tail).encode()
        return ReadPlan(commands, len(acks), count, history, commit, replicas, True, after)

    def plan_wait_read(
        self, tail: bytes | str, block_ms: int, count: int, acks: list[bytes] | None = None
    ) -> ReadPlan:
        """Wait for an append after ``tail``, then ack ``acks`` and read up to ``count`` new
        entries: one write.

        ``XREAD BLOCK`` first (no side effect), then the fenced read transaction queued behind
        it: Redis runs the transaction as soon as the XREAD returns (an append, or the time
        out), so the entries come back with the wake, one round trip after the append instead
        of two. The transaction is fenced when it runs, not when it was sent: the WATCH armed
        by the previous read still holds, so a new owner's epoch aborts it (and its acks).
        Acks of handled entries may ride on it (they wait at most ``block_ms``, so the carrier
        keeps it short then); a table commit does not (its writes would wait for an append).

        No XREVRANGE: if the transaction reads nothing, the tail to wait after next is the id
        the XREAD woke on (an entry the group had delivered already: the next wait starts
        past it) or, timed out, ``tail`` itself.
        """
        wait: Command = ("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", self.stream_key, tail)
        return self._plan_read(acks or [], ">", count, None, None, wait)

    def on_read(self, plan: ReadPlan, replies: list[Any]) -> ReadResult:
        """The result of a read's replies."""
        if plan.blocks:
            woke = replies[0]  # the XREAD's: the transaction's result says the rest
            replies = replies[1:]
        waited: tuple[Notice, ...] = ()
        if plan.wait:
            waited = self._waited(plan.wait, replies[-1])
            replies = replies[:-1]
        exec_at = len(replies) - 3
        watching = replies[-1] == self.epoch_bytes and not isinstance(replies[-2], Exception)
        result = replies[exec_at]
        if type(result) is not list:  # EXEC did not run the transaction
            return self._not_executed(plan, replies[:exec_at], result, watching)
        if plan.commit is not None:
            partly = first_commit_error(plan.commit, result)
            if partly is not None:
                failed = CommitError(
                    f"{self.label}: Redis failed part of a commit ({partly}); the partition "
                    "reloads its tables"
                )
                return _failed(watching, error=failed, partial=True)
            result = result[len(plan.commit.commands):]
        error = _first_error(result)
        if error is not None:
            return _failed(watching, error=error)
        notices: tuple[Notice, ...] = waited
        if plan.acks and result[0] != plan.acks:
            # Entries we handled were no longer pending: an operator ran XGROUP
            # DELCONSUMER/SETID, or the stream was trimmed. Nothing to undo; make it visible.
            notices += (
                (
                    "acks-lost",
                    f"{self.label}: {plan.acks - int(result[0])} of {plan.acks} handled "
                    "entries were no longer pending when acked",
                ),
            )
        if not plan.limit:
            return ReadResult([], {}, (), None, None, plan.acks, notices, watching)
        offset = 1 if plan.acks else 0
        read = result[offset]
        entries = read[0][1] if read else []
        if plan.history:
            return self._history(entries, result[offset + 1], plan.acks, notices, watching)
        if entries:
            return ReadResult(entries, {}, (), None, None, plan.acks, notices, watching)
        if plan.blocks:  # [[stream, [[id, fields]]]] if an append woke it (None: timed out)
            last = woke[0][1][-1][0] if type(woke) is list and woke else plan.after
        else:
            tail = result[offset + 1]
            last = tail[0][0] if tail else b"0-0"
        return ReadResult([], {}, (), None, last, plan.acks, notices, watching)

    def _waited(self, replicas: int, reply: Any) -> tuple[Notice, ...]:
        acknowledged = reply if isinstance(reply, int) else 0
        if acknowledged >= replicas:
            return ()
        return (
            (
                "wait-replicas",
                f"{self.label}: a commit was acknowledged by {acknowledged} of {replicas} "
                f"replicas ({reply!r:.80})",
            ),
        )

    def _not_executed(
        self, plan: ReadPlan, queued: list[Any], result: Any, watching: bool
    ) -> ReadResult:
        refused = _first_error(queued)
        if refused is not None:  # refused while queueing: the EXEC was aborted (EXECABORT)
            # The acks may go alone only if no commit rides with them (they are one unit).
            oom = (
                isinstance(refused, rex.OutOfMemoryError) and plan.acks > 0 and plan.limit > 0
                and plan.commit is None
            )
            return _failed(watching, error=refused, ack_only_retry=oom)
        if result is None:  # the epoch changed since our WATCH: the transaction did nothing
            return _failed(False, fenced=Fenced(self.epoch, None, self.label))
        if isinstance(result, Exception):
            return _failed(watching, error=result)
        raise TypeError(f"unexpected EXEC reply {result!r:.100}")

    def _history(
        self,
        entries: list[Any],
        pending: list[Any] | None,
        acked: int,
        notices: tuple[Notice, ...],
        watching: bool,
    ) -> ReadResult:
        deliveries = {p[0]: int(p[3]) for p in pending} if pending else {}
        kept = [e for e in entries if e[1]]
        trimmed = tuple(e[0] for e in entries if not e[1])
        last = entries[-1][0] if entries else None
        return ReadResult(kept, deliveries, trimmed, last, None, acked, notices, watching)

    # -- claim ---------------------------------------------------------------------------------

    def plan_claim(self, cursor: bytes | str, count: int) -> ScriptCall:
        return ScriptCall(
            "claim",
            [self.stream_key, self.epoch_key],
            [self.group, self.consumer, str(self.epoch), cursor, count],
        )

    def on_claim(self, reply: list[Any]) -> ClaimResult:
        nxt, claimed, deleted = reply
        notices: tuple[Notice, ...] = ()
        if deleted:
            notices = (
                (
                    "trimmed",
                    f"{self.label}: {deleted} pending entries were trimmed from the stream "
                    "before they were handled",
                ),
            )
        done = nxt in (b"0-0", "0-0")
        return ClaimResult(None if done else nxt, int(claimed), int(deleted or 0), notices)

    # -- dead-letter move ----------------------------------------------------------------------

    def plan_dead_letter(self, given_up: GivenUp, *, worker: str, time_ms: int) -> ScriptCall:
        """The atomic, fenced, idempotent move (format: ``_core.deadletter``)."""
        entry_id, fields = given_up.entry_id, given_up.fields
        entry = DeadLetter(
            dlq_id="",
            stream=self.stream,
            partition=self.partition,
            original_id=entry_id.decode(),
            actor=self.group,
            kind=given_up.kind,
            error=given_up.message[:2000],
            trace=(given_up.trace or "")[:4000],
            deliveries=given_up.deliveries,
            worker=worker,
            epoch=self.epoch,
            time_ms=time_ms,
            fields=tuple(zip(fields[::2], fields[1::2], strict=False)),
        )
        return ScriptCall(
            "deadletter",
            [
                self.stream_key,
                self.epoch_key,
                keys.dlq_key(self.app, self.stream, self.partition),
                keys.dlq_index_key(self.app, self.stream, self.partition),
            ],
            # maxlen 0: the dead-letter actor trims (with the index entries) after the move.
            [self.group, str(self.epoch), entry_id, 0, *entry.entry_fields()],
        )
