"""Dead letters: poison events moved, atomically with their ack, to a per-partition stream.

The move runs on the partition actor's own connection, in its order, through one fenced Lua
script (write the dead-letter entry, remember original id -> dead-letter id, XACK the source), so
it is atomic and idempotent: a retried move never makes a second entry, and a zombie cannot move
anything. If the write fails (OOM under maxmemory, READONLY), nothing is acked: the event stays
pending and the partition actor backs off with the error visible.

The entry format is ``actorstream._core.deadletter``. For now this is a helper shared by the
partition actors of a worker, not an actor of its own (issue 10, milestone 2 makes it one).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from .._core.deadletter import ORIGINAL_PREFIX
from .._transport import Connection, evalsha_on
from . import scripts
from .context import WorkerContext

if TYPE_CHECKING:
    from .link import PartitionLink


class DeadLetters:
    """The dead-letter side of a worker: performs fenced moves and keeps a worker-wide count."""

    def __init__(self, worker: WorkerContext) -> None:
        self.worker = worker
        self.maxlen = worker.settings.dead_letter_maxlen
        self.moved = 0

    async def move(
        self,
        link: PartitionLink,
        conn: Connection,
        entry_id: bytes,
        fields: list[bytes],
        *,
        kind: str,
        message: str,
        trace: str | None,
        deliveries: int,
    ) -> bytes:
        link.fence.check(trio.current_time())
        meta: list[Any] = [
            "stream", link.stream,
            "partition", link.partition,
            "id", entry_id,
            "actor", link.group,
            "kind", kind,
            "error", message[:2000],
            "trace", (trace or "")[:4000],
            "deliveries", deliveries,
            "worker", self.worker.worker_id,
            "epoch", link.fence.epoch,
            "time", int(time.time() * 1000),
        ]
        for i in range(0, len(fields) - 1, 2):
            meta.append(ORIGINAL_PREFIX + fields[i])
            meta.append(fields[i + 1])
        dlq_id: bytes = await evalsha_on(
            conn,
            scripts.DEADLETTER,
            [link.stream_key, link.epoch_key, link.dlq_key, link.dlq_index_key],
            [link.group, link.epoch_arg, entry_id, self.maxlen, *meta],
        )
        self.moved += 1
        self.worker.report(
            "dead-letter",
            f"{link.group}[{link.partition}] {entry_id.decode()}: {kind}: {message}"[:300],
        )
        return dlq_id
