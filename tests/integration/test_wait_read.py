"""The idle partition's wait and read in one round trip, against a real Redis.

``plan_wait_read`` relies on two behaviours of Redis: commands pipelined behind a blocked
``XREAD`` run as soon as it returns, and the ``WATCH`` armed before still fences them. A new
owner's epoch while we wait must abort the read (nothing taken into our pending list).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from actorstream._core.protocol import PartitionProtocol, ReadResult
from actorstream._transport import Client


def proto(epoch: int) -> PartitionProtocol:
    return PartitionProtocol(
        app="w", stream="s", partition=0, group="g", consumer="c1", epoch=epoch
    )


async def prepared(client: Client, p: PartitionProtocol) -> None:
    await client.execute("XGROUP", "CREATE", p.stream_key, "g", "$", "MKSTREAM")
    await client.execute("SET", p.epoch_key, p.epoch)
    await client.execute("SET", p.lease_key, "c1", "PX", 60_000)


async def wait_read_during(
    redis_url: str, during: Callable[[Client, PartitionProtocol], Awaitable[None]]
) -> tuple[ReadResult, int]:
    """Arm the WATCH, send the wait with its queued read, run ``during`` while it is blocked;
    the read's result and the group's pending count after it."""
    p = proto(3)
    async with Client.from_url(redis_url) as client:
        await prepared(client, p)
        async with client.dedicated("wait", key=p.stream_key) as conn:
            assert p.on_watch(await conn.pipeline(p.watch_commands())) is None
            plan = p.plan_wait_read(b"0-0", 5000, 10)
            got = []

            async def wait_and_read() -> None:
                got.append(p.on_read(plan, await conn.pipeline(plan.commands)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_and_read)
                await trio.sleep(0.2)
                assert not got
                await during(client, p)
        [result] = got
        pending = await client.execute("XPENDING", p.stream_key, "g")
        return result, int(pending[0])


def test_the_read_queued_behind_the_wait_runs_when_an_entry_is_appended(redis_url: str) -> None:
    async def append(client: Client, p: PartitionProtocol) -> None:
        await client.execute("XADD", p.stream_key, "*", "k", "v")

    result, pending = trio.run(wait_read_during, redis_url, append)
    assert [fields for _, fields in result.entries] == [[b"k", b"v"]]
    assert result.watching and result.fenced is None
    assert pending == 1


def test_a_new_owner_while_waiting_fences_the_read_and_takes_nothing(redis_url: str) -> None:
    async def new_owner_then_append(client: Client, p: PartitionProtocol) -> None:
        await client.execute("SET", p.epoch_key, 4)  # a new owner's lease
        await client.execute("XADD", p.stream_key, "*", "k", "v")

    result, pending = trio.run(wait_read_during, redis_url, new_owner_then_append)
    assert result.fenced is not None and not result.watching and not result.entries
    assert pending == 0
