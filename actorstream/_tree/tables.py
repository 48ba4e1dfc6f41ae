"""Loading a partition's tables when its actor takes the lease (state ``restoring``).

A table's keys of one partition are one Redis hash beside the partition's stream (same slot),
read with HSCAN in chunks (Redis stays responsive for everyone else) on the partition actor's
own connection. Nobody else writes it meanwhile: the previous owner's commits are fenced by the
epoch we hold. What is loaded is the committed state; nothing is replayed from a changelog.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .._core.errors import DecodeError
from .._core.fence import Fence
from .._scope import PartitionTables
from .._transport import Connection
from .context import Report

__all__ = ["SCAN_COUNT", "restore"]

log = logging.getLogger("actorstream.partition")

#: Fields per HSCAN: large enough that 100k keys take a few dozen round trips.
SCAN_COUNT = 5000


async def restore(
    tables: PartitionTables, conn: Connection, fence: Fence, report: Report
) -> int:
    """Forget what is held in memory (values and uncommitted writes) and load the committed
    state of every table of the partition; returns the number of keys loaded.

    A value that no longer decodes (its record type changed incompatibly) is left out and
    reported: the key then reads as missing until the handler writes it again.
    """
    tables.reset()
    total = 0
    for local in tables.tables.values():
        decode = local.table.codec.decode
        data: dict[str, Any] = {}
        bad = 0
        cursor: Any = b"0"
        while True:
            fence.check(trio.current_time())
            cursor, flat = await conn.execute(
                "HSCAN", local.hash_key, cursor, "COUNT", SCAN_COUNT
            )
            for i in range(0, len(flat), 2):
                try:
                    data[flat[i].decode()] = decode(flat[i + 1])
                except DecodeError as exc:
                    bad += 1
                    if bad == 1:
                        report(
                            "table-undecodable",
                            f"{local.table.name}[{local.partition}] {flat[i]!r}: {exc}",
                        )
            if cursor in (b"0", 0, "0"):
                break
        if bad:
            log.error(
                "table %s[%d]: %d stored value(s) could not be decoded and read as missing",
                local.table.name, local.partition, bad,
            )
        local.data = data
        total += len(data)
    return total
