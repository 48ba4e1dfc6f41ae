"""The idle partition's wait and read in one round trip, against a real Redis.

``plan_wait_read`` relies on two behaviours of Redis: commands pipelined behind a blocked
``XREAD`` run as soon as it returns, and the ``WATCH`` armed before still fences them. A new
owner's epoch while we wait must abort the read (nothing taken into our pending list).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import pytest
import trio

from actorstream._core.errors import FencedError
from actorstream._core.failures import ContainmentPolicy, HealthBoard, PartitionFailures
from actorstream._core.fence import Fence
from actorstream._core.protocol import PartitionProtocol, ReadResult
from actorstream._transport import Client
from actorstream._tree.counters import Counters
from actorstream._tree.link import PartitionLink
from actorstream._tree.reader import Reader
from actorstream._tree.supervisor import ChildContext


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


# -- the reader: acks riding on the wait, a stop, a fence ---------------------------------------


async def with_reader(
    redis_url: str, body: Callable[[Client, Reader, ChildContext], Awaitable[None]]
) -> None:
    """A partition's link and reader at epoch 3 over one connection, as a session has them."""
    p = proto(3)
    async with Client.from_url(redis_url) as client:
        await prepared(client, p)
        link = PartitionLink(
            app="w", stream="s", partition=0, group="g", consumer="c1",
            fence=Fence(3, math.inf),
            counters=Counters(PartitionFailures(ContainmentPolicy(), HealthBoard(), 0)),
            report=lambda kind, message: None, packed=not client.cluster,  # as a worker does
        )
        ctx = ChildContext("p0")
        async with client.dedicated("reader", key=p.stream_key) as conn:
            await body(client, Reader(link, conn, ctx, 10), ctx)


async def pending_ids(client: Client) -> list[bytes]:
    return [e[0] for e in await client.execute("XPENDING", proto(3).stream_key, "g", "-", "+", 10)]


def test_the_acks_of_handled_entries_ride_on_the_wait_that_returns_the_next(
    redis_url: str,
) -> None:
    async def body(client: Client, reader: Reader, ctx: ChildContext) -> None:
        key = proto(3).stream_key
        first = await client.execute("XADD", key, "*", "n", "1")
        assert [e[0] for e in await reader.next_entries() or []] == [first]
        reader.commit([first])
        second = await client.execute("XADD", key, "*", "n", "2")
        assert [e[0] for e in await reader.next_entries() or []] == [second]
        assert reader.link.acks == [] and reader.link.counters.acked == 1
        assert await pending_ids(client) == [second]

    trio.run(with_reader, redis_url, body)


def test_acks_riding_on_a_wait_are_fenced_by_a_new_owner_with_the_read(redis_url: str) -> None:
    async def body(client: Client, reader: Reader, ctx: ChildContext) -> None:
        key = proto(3).stream_key
        first = await client.execute("XADD", key, "*", "n", "1")
        assert [e[0] for e in await reader.next_entries() or []] == [first]
        reader.commit([first])
        await client.execute("SET", proto(3).epoch_key, 4)  # a new owner's lease
        await client.execute("XADD", key, "*", "n", "2")
        with pytest.raises(FencedError):
            await reader.next_entries()
        assert reader.link.acks == [first]
        assert await pending_ids(client) == [first]  # not acked, and nothing new taken

    trio.run(with_reader, redis_url, body)


def test_a_wake_that_read_more_than_asked_hands_out_the_rest_next_in_order(
    redis_url: str,
) -> None:
    async def body(client: Client, reader: Reader, ctx: ChildContext) -> None:
        key = proto(3).stream_key
        tail = (await reader.read_new(10)).tail
        ids = [await client.execute("XADD", key, "*", "n", str(i)) for i in range(5)]
        await reader.linger(tail, 0.05)
        got = [[e[0] for e in (await reader.read_new(2)).entries] for _ in range(3)]
        assert got == [ids[:2], ids[2:4], ids[4:]]

    trio.run(with_reader, redis_url, body)


def test_waits_move_past_entries_the_group_had_delivered_before_our_tail(
    redis_url: str,
) -> None:
    # An operator moved the group's cursor past entries (XGROUP SETID): a wait after our tail
    # wakes on them at once, but the read takes none. The next wait starts past the one it
    # woke on, so the reader does not spin on them; the next append is read as usual.
    async def body(client: Client, reader: Reader, ctx: ChildContext) -> None:
        key = proto(3).stream_key
        tail = (await reader.read_new(10)).tail
        skipped = [await client.execute("XADD", key, "*", "n", str(i)) for i in range(3)]
        await client.execute("XGROUP", "SETID", key, "g", "$")
        woken = []
        for _ in range(3):
            await reader.linger(tail, 0.05)
            read = await reader.read_new(10)
            assert read.entries == []
            woken.append(read.tail)
            tail = read.tail
        assert woken == skipped
        new = await client.execute("XADD", key, "*", "n", "new")
        await reader.linger(tail, 1.0)
        assert [e[0] for e in (await reader.read_new(10)).entries] == [new]

    trio.run(with_reader, redis_url, body)


def test_a_stop_ends_a_long_wait_with_nothing_in_hand(redis_url: str) -> None:
    async def body(client: Client, reader: Reader, ctx: ChildContext) -> None:
        got: list[object] = []

        async def wait() -> None:
            got.append(await reader.next_entries())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.2)
            assert not got
            ctx._request_stop()
        assert got == [None]

    trio.run(with_reader, redis_url, body)


def test_acks_a_crash_could_not_flush_are_a_warning_unless_a_redis_outage_explains_it(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(client: Client, reader: Reader, ctx: ChildContext) -> None:
        key = proto(3).stream_key
        first = await client.execute("XADD", key, "*", "n", "1")
        assert [e[0] for e in await reader.next_entries() or []] == [first]
        reader.commit([first])
        await client.execute("SET", proto(3).epoch_key, 4)  # a new owner's lease
        with caplog.at_level(logging.INFO, logger="actorstream.partition"):
            await reader.link.flush_acks_after_crash(reader.conn, lambda: True)
            await reader.link.flush_acks_after_crash(reader.conn, lambda: False)
        levels = [r.levelno for r in caplog.records if "could not ack 1" in r.getMessage()]
        assert levels == [logging.INFO, logging.WARNING]
        assert await pending_ids(client) == [first]

    trio.run(with_reader, redis_url, body)
