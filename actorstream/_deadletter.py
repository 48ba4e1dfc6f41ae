"""Dead letters: poison events moved, atomically with their ack, to a per-partition stream.

The move runs on the partition actor's own connection, in its order, through one fenced Lua
script (write the dead-letter entry, remember original id -> dead-letter id, XACK the source), so
it is atomic and idempotent: a retried move never makes a second entry, and a zombie cannot move
anything. If the write fails (OOM under maxmemory, READONLY), nothing is acked: the event stays
pending and the partition actor backs off with the error visible.

A dead-letter entry holds the original entry's fields untouched, each prefixed ``o.``, plus:
``stream``, ``partition``, ``id``, ``actor``, ``kind`` (``max_deliveries`` or ``decode:<why>``),
``error``, ``trace``, ``deliveries``, ``worker``, ``epoch``, ``time`` (unix ms).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio
from attrs import frozen

from . import _scripts
from ._transport import Connection, evalsha_on

if TYPE_CHECKING:
    from ._partition import PartitionActor
    from ._system import Runtime

ORIGINAL_PREFIX = b"o."


@frozen
class DeadLetter:
    """One dead-letter entry, as listed by ``actorstream dlq``."""

    dlq_id: str
    stream: str
    partition: int
    original_id: str
    actor: str
    kind: str
    error: str
    trace: str
    deliveries: int
    worker: str
    epoch: int
    time_ms: int
    fields: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def parse(cls, dlq_id: bytes, flat: list[bytes]) -> DeadLetter:
        meta: dict[bytes, bytes] = {}
        original: list[tuple[bytes, bytes]] = []
        for i in range(0, len(flat) - 1, 2):
            name, value = flat[i], flat[i + 1]
            if name.startswith(ORIGINAL_PREFIX):
                original.append((name[len(ORIGINAL_PREFIX) :], value))
            else:
                meta[name] = value

        def text(name: str) -> str:
            return meta.get(name.encode(), b"").decode("utf-8", "replace")

        def number(name: str) -> int:
            try:
                return int(meta.get(name.encode(), b"0"))
            except ValueError:
                return 0

        return cls(
            dlq_id=dlq_id.decode(),
            stream=text("stream"),
            partition=number("partition"),
            original_id=text("id"),
            actor=text("actor"),
            kind=text("kind"),
            error=text("error"),
            trace=text("trace"),
            deliveries=number("deliveries"),
            worker=text("worker"),
            epoch=number("epoch"),
            time_ms=number("time"),
            fields=tuple(original),
        )

    def original_flat(self) -> list[bytes]:
        out: list[bytes] = []
        for name, value in self.fields:
            out.append(name)
            out.append(value)
        return out


class DeadLetters:
    """The dead-letter side of a worker: performs fenced moves and keeps a worker-wide count."""

    def __init__(self, runtime: Runtime, *, maxlen: int = 0) -> None:
        self.runtime = runtime
        self.maxlen = maxlen
        self.moved = 0

    async def move(
        self,
        actor: PartitionActor,
        conn: Connection,
        entry_id: bytes,
        fields: list[bytes],
        *,
        kind: str,
        message: str,
        trace: str | None,
        deliveries: int,
    ) -> bytes:
        actor.fence.check(trio.current_time())
        meta: list[Any] = [
            "stream", actor.spec.stream.name,
            "partition", actor.partition,
            "id", entry_id,
            "actor", actor.spec.name,
            "kind", kind,
            "error", message[:2000],
            "trace", (trace or "")[:4000],
            "deliveries", deliveries,
            "worker", self.runtime.worker_id,
            "epoch", actor.fence.epoch,
            "time", int(time.time() * 1000),
        ]
        for i in range(0, len(fields) - 1, 2):
            meta.append(ORIGINAL_PREFIX + fields[i])
            meta.append(fields[i + 1])
        dlq_id: bytes = await evalsha_on(
            conn,
            _scripts.DEADLETTER,
            [actor.stream_key, actor.epoch_key, actor.dlq_key, actor.dlq_index_key],
            [actor.group, actor.epoch_arg, entry_id, self.maxlen, *meta],
        )
        self.moved += 1
        self.runtime.report(
            "dead-letter",
            f"{actor.spec.name}[{actor.partition}] {entry_id.decode()}: {kind}: {message}"[:300],
        )
        return dlq_id
