"""Cluster routing of the transport against real Redis Clusters (``actorstream.testing``).

A module-wide 3-primary cluster serves the tests that only move slots (they ask where keys are,
never assume a layout); tests that kill or fail over nodes start clusters of their own.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from redis import exceptions as rex

from actorstream._core import keys as _keys
from actorstream._transport import Client, Script, SlotMovedError, slot_of
from actorstream.testing import ClusterNode, RedisCluster, RedisServer

pytestmark = pytest.mark.filterwarnings("error")

_counter = itertools.count()


@pytest.fixture(scope="module")
def cluster3() -> Iterator[RedisCluster]:
    with RedisCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture
async def client(cluster3: RedisCluster) -> AsyncIterator[Client]:
    async with Client.from_url(cluster3.url, connect_retry_for=3.0) as c:
        yield c


def fresh_key(tag: str = "k") -> str:
    return f"{{{tag}{next(_counter)}-{random.randrange(1 << 30)}}}"


def other_primary(cluster: RedisCluster, slot: int) -> ClusterNode:
    owner = cluster.owner_of(slot)
    return next(n for n in cluster.primaries if n is not owner)


async def move(cluster: RedisCluster, slot: int, target: ClusterNode) -> None:
    await trio.to_thread.run_sync(cluster.move_slot, slot, target)


# -- slots and detection ----------------------------------------------------------------------


async def test_key_slot_matches_cluster_keyslot(cluster3: RedisCluster) -> None:
    rng = random.Random(7)
    keys: list[str] = [
        _keys.stream_key("app", "orders", 3),
        _keys.epoch_key("app", "orders", 3, "bill"),
        _keys.members_key("app"),
        "{}", "{}x", "a{b}c{d}", "{a", "a}", "{{a}}", "", "ünïcödé", "x" * 300,
    ]  # fmt: skip
    alphabet = "ab{}:-_xyz0123456789"
    keys += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 20))) for _ in range(300)]
    node = cluster3.nodes[0]
    for key in keys:
        assert slot_of(key) == node.call("CLUSTER", "KEYSLOT", key), key
        assert slot_of(key.encode()) == slot_of(key)


async def test_single_redis_is_not_routed(redis_server: RedisServer) -> None:
    async with Client.from_url(redis_server.url) as c:
        assert c.cluster is None
        assert await c.execute("PING") == b"PONG"
        assert c.cluster is False
        assert await c.primaries() == [c]
        assert c._router is None


async def test_detects_a_cluster_and_routes_every_key(
    cluster3: RedisCluster, client: Client
) -> None:
    assert await client.execute("PING") == b"PONG"
    assert client.cluster is True
    keys = [fresh_key() for _ in range(300)]
    for i, key in enumerate(keys):
        assert await client.execute("SET", key, i) == b"OK"
    for key in keys[:30]:
        owner = cluster3.owner_of(slot_of(key))
        assert owner.call("EXISTS", key) == 1
        for other in cluster3.primaries:
            if other is not owner:  # the others redirect, and hold nothing of that slot
                assert other.call("CLUSTER", "COUNTKEYSINSLOT", slot_of(key)) == 0
    assert [await client.execute("GET", k) for k in keys] == [str(i).encode() for i in range(300)]
    stats = client.statistics()
    assert stats.max_connections == 3 * client.max_connections  # one bounded pool per node


async def test_seed_nodes_from_the_url(cluster3: RedisCluster) -> None:
    dead = RedisServer().start()
    port = dead.port
    dead.close()  # a seed that is down: the next seed in the URL is asked
    others = ",".join(f"127.0.0.1:{n.port}" for n in cluster3.nodes)
    url = f"redis://127.0.0.1:{port}/0?cluster_nodes={others}"
    async with Client.from_url(url, connect_retry_for=0.0, cluster=True) as c:
        key = fresh_key()
        assert await c.execute("SET", key, "v") == b"OK"
        assert await c.execute("GET", key) == b"v"


async def test_pipeline_is_grouped_per_node_and_keeps_order(
    cluster3: RedisCluster, client: Client
) -> None:
    keys = [fresh_key() for _ in range(500)]
    commands: list[Any] = []
    for i, key in enumerate(keys):
        commands += [("SET", key, i), ("INCR", key), ("GET", key)]
    commands.insert(7, ("PING",))  # keyless: any node
    commands.insert(11, ("HSET", keys[0], "f", "v"))  # a wrong type: its error stays in place
    replies = await client.pipeline(commands)
    assert replies[7] == b"PONG"
    assert isinstance(replies[11], rex.ResponseError) and "WRONGTYPE" in str(replies[11])
    del replies[11], replies[7]
    assert replies == [r for i in range(500) for r in (b"OK", i + 1, str(i + 1).encode())]
    nodes = {cluster3.owner_of(slot_of(k)).port for k in keys}
    assert len(nodes) == 3


async def test_scripts_run_on_the_node_of_their_keys(
    cluster3: RedisCluster, client: Client
) -> None:
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])", name="incr")
    tag = fresh_key()
    assert await client.evalsha(script, [tag + "a"], [5]) == 5
    for node in cluster3.primaries:
        node.call("SCRIPT", "FLUSH")  # NOSCRIPT: loaded on the right node and called again
    assert await client.evalsha(script, [tag + "a"], [2]) == 7
    calls = [([fresh_key()], [i]) for i in range(50)]
    for node in cluster3.primaries:
        node.call("SCRIPT", "FLUSH")
    assert await client.evalsha_many(script, calls) == list(range(50))


async def test_crossslot_fails_loudly_before_sending(client: Client) -> None:
    a, b = "{a}x", "{b}x"
    assert slot_of(a) != slot_of(b)
    with pytest.raises(rex.ClusterCrossSlotError, match="CROSSSLOT"):
        await client.execute("MGET", a, b)
    with pytest.raises(rex.ClusterCrossSlotError):
        await client.pipeline([("MULTI",), ("SET", a, 1), ("SET", b, 1), ("EXEC",)])
    script = Script("return 1")
    with pytest.raises(rex.ClusterCrossSlotError):
        await client.evalsha(script, [a, b])
    async with client.dedicated() as conn:
        await conn.execute("SET", a, 1)
        with pytest.raises(rex.ClusterCrossSlotError, match="serves slot"):
            await conn.execute("GET", b)
    with pytest.raises(rex.RedisClusterException, match="primaries"):
        await client.execute("KEYS", "*")
    assert await client.execute("MGET", "{a}1", "{a}2") == [None, None]  # one tag: fine


async def test_scan_every_primary(cluster3: RedisCluster, client: Client) -> None:
    prefix = f"scan{next(_counter)}:"
    keys = {f"{prefix}{i}" for i in range(200)}
    await client.pipeline([("SET", k, 1) for k in keys])
    found: set[str] = set()
    nodes = await client.primaries()
    assert len(nodes) == 3
    for node in nodes:
        cursor: Any = 0
        while True:
            cursor, batch = await node.execute("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 500)
            found.update(k.decode() for k in batch)
            if int(cursor) == 0:
                break
    assert found == keys


# -- resharding -------------------------------------------------------------------------------


async def test_moved_after_a_live_slot_move(cluster3: RedisCluster, client: Client) -> None:
    key = fresh_key()
    await client.execute("SET", key, "before")
    slot = slot_of(key)
    target = other_primary(cluster3, slot)
    await move(cluster3, slot, target)
    assert cluster3.owner_of(slot) is target
    redirects = client._router.redirects if client._router else 0
    assert await client.execute("GET", key) == b"before"  # MOVED, followed
    assert client._router is not None and client._router.redirects == redirects + 1
    assert await client.execute("SET", key, "after") == b"OK"  # the map was updated
    assert client._router.redirects == redirects + 1
    assert target.call("GET", key) == b"after"


async def test_many_slots_move_at_once_keys_and_all(cluster3: RedisCluster) -> None:
    """``move_slots``: a third of a node's slots in a few round trips, keys included."""
    async with Client.from_url(cluster3.url, connect_retry_for=3.0) as client:
        keys = [fresh_key() for _ in range(20)]
        for key in keys:
            await client.execute("SET", key, key)
        source = cluster3.owner_of(slot_of(keys[0]))
        target = other_primary(cluster3, slot_of(keys[0]))
        ours = sorted({slot_of(k) for k in keys if cluster3.owner_of(slot_of(k)) is source})
        lo, hi = next((int(e[0]), int(e[1])) for e in source.call("CLUSTER", "SLOTS")
                      if int(e[2][1]) == source.port and int(e[0]) <= ours[0] <= int(e[1]))
        slots = sorted({*range(lo, lo + (hi - lo) // 3), *ours})
        moved = await trio.to_thread.run_sync(cluster3.move_slots, slots, target)
        # Other tests' keys share this cluster: at least ours moved.
        assert moved >= sum(1 for k in keys if slot_of(k) in ours)
        assert all(cluster3.owner_of(s) is target for s in (slots[0], slots[-1], *ours))
        await trio.to_thread.run_sync(cluster3.wait_ok)
        for key in keys:
            assert await client.execute("GET", key) == key.encode()


async def test_ask_during_a_migration(cluster3: RedisCluster, client: Client) -> None:
    tag = fresh_key()
    moved, stays, new = tag + "moved", tag + "stays", tag + "new"
    await client.pipeline([("SET", moved, "m"), ("SET", stays, "s")])
    slot = slot_of(tag)
    source = cluster3.owner_of(slot)
    migration = cluster3.begin_move(slot, other_primary(cluster3, slot))
    try:
        source.call("MIGRATE", "127.0.0.1", migration.target.port, "", 0, 5000, "KEYS", moved)
        with pytest.raises(RuntimeError, match="AskError"):  # the source no longer has it
            source.call("GET", moved)
        assert await client.execute("GET", moved) == b"m"  # ASK -> ASKING + GET on the target
        assert await client.execute("GET", stays) == b"s"  # still on the source
        assert await client.execute("SET", new, "n") == b"OK"  # new keys go to the target
        assert migration.target.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 2  # moved, new
        replies = await client.pipeline([("GET", moved), ("GET", stays), ("GET", new)])
        assert replies == [b"m", b"s", b"n"]
        async with client.dedicated(key=tag) as conn:
            assert await conn.pipeline([("GET", moved), ("GET", stays)]) == [b"m", b"s"]
    finally:
        await trio.to_thread.run_sync(migration.finish)
    assert await client.pipeline([("GET", moved), ("GET", stays), ("GET", new)]) == [
        b"m", b"s", b"n"
    ]  # fmt: skip


async def test_tryagain_is_retried_until_the_migration_ends(
    cluster3: RedisCluster, client: Client
) -> None:
    tag = fresh_key()
    a, b = tag + "a", tag + "b"
    await client.pipeline([("SET", a, "1"), ("SET", b, "2")])
    slot = slot_of(tag)
    source = cluster3.owner_of(slot)
    migration = cluster3.begin_move(slot, other_primary(cluster3, slot))
    source.call("MIGRATE", "127.0.0.1", migration.target.port, "", 0, 5000, "KEYS", a)
    # a is on the target, b on the source: a multi-key command gets TRYAGAIN until the end.
    async with trio.open_nursery() as nursery:

        async def finish_soon() -> None:
            await trio.sleep(0.3)
            await trio.to_thread.run_sync(migration.finish)

        nursery.start_soon(finish_soon)
        assert await client.execute("MGET", a, b) == [b"1", b"2"]


async def test_dedicated_connection_follows_its_slot(
    cluster3: RedisCluster, client: Client
) -> None:
    key = fresh_key() + "s"
    async with client.dedicated("reader", key=key) as conn:
        await conn.execute("XADD", key, "*", "n", 1)
        before = conn.node
        await move(cluster3, slot_of(key), other_primary(cluster3, slot_of(key)))
        assert await conn.execute("XLEN", key) == 1  # MOVED: reopened on the new owner
        assert conn.node != before
        assert conn.node == ("127.0.0.1", cluster3.owner_of(slot_of(key)).port)


async def test_watch_state_cannot_follow_a_moved_slot(
    cluster3: RedisCluster, client: Client
) -> None:
    key = fresh_key()
    await client.execute("SET", key, 1)
    async with client.dedicated(key=key) as conn:
        assert await conn.pipeline([("WATCH", key), ("GET", key)]) == [b"OK", b"1"]
        await move(cluster3, slot_of(key), other_primary(cluster3, slot_of(key)))
        with pytest.raises(SlotMovedError) as info:
            await conn.pipeline([("MULTI",), ("INCR", key), ("EXEC",)])
        assert isinstance(info.value, rex.ConnectionError)  # callers treat it as transient
        assert info.value.ran is False
        # The connection keeps serving its slot, now unwatched, on the new node.
        assert await conn.execute("GET", key) == b"1"
    assert await client.execute("GET", key) == b"1"


async def test_blocked_read_follows_a_moved_slot(cluster3: RedisCluster, client: Client) -> None:
    key = fresh_key() + "s"
    await client.execute("XADD", key, "1-1", "n", 0)
    got: list[Any] = []
    async with client.dedicated("reader", key=key) as conn, trio.open_nursery() as nursery:

        async def read() -> None:
            got.append(
                await conn.execute("XREAD", "BLOCK", 10_000, "STREAMS", key, "1-1", timeout=15)
            )

        nursery.start_soon(read)
        await trio.sleep(0.2)  # blocked on the old owner
        await move(cluster3, slot_of(key), other_primary(cluster3, slot_of(key)))
        await trio.sleep(0.2)  # MOVED to the blocked client; it reads again on the new owner
        await client.execute("XADD", key, "2-1", "n", 1)
    assert got[0][0][1][0][0] == b"2-1"


# -- failover ---------------------------------------------------------------------------------


async def test_manual_failover_and_blocked_read() -> None:
    async with RedisCluster(primaries=3, replicas=1) as cluster:
        async with Client.from_url(cluster.url, connect_retry_for=5.0) as client:
            key = fresh_key() + "s"
            await client.execute("XADD", key, "1-1", "n", 0)
            primary = cluster.owner_of(slot_of(key))
            replica = cluster.replicas_of(primary)[0]
            got: list[Any] = []
            async with client.dedicated(key=key) as conn, trio.open_nursery() as nursery:

                async def read() -> None:
                    got.append(await conn.execute(
                        "XREAD", "BLOCK", 10_000, "STREAMS", key, "1-1", timeout=15
                    ))  # fmt: skip

                nursery.start_soon(read)
                await trio.sleep(0.2)
                await trio.to_thread.run_sync(cluster.failover, replica)
                assert cluster.owner_of(slot_of(key)) is replica
                await trio.sleep(0.2)  # UNBLOCKED / MOVED: read again on the promoted node
                await client.execute("XADD", key, "2-1", "n", 1)
            assert got[0][0][1][0][0] == b"2-1"
            assert await client.execute("XLEN", key) == 2


async def test_primary_killed_then_replica_promoted() -> None:
    async with RedisCluster(primaries=3, replicas=1, node_timeout_ms=500) as cluster:
        async with Client.from_url(cluster.url, connect_retry_for=1.0) as client:
            keys = [fresh_key() for _ in range(100)]
            await client.pipeline([("SET", k, "v") for k in keys])
            await client.execute("WAIT", 1, 1000)
            for node in cluster.primaries:  # every write reached its replica before the kill
                node.call("WAIT", 1, 2000)
            victim = cluster.owner_of(slot_of(keys[0]))
            replica = cluster.replicas_of(victim)[0]
            victim.kill()
            errors = 0
            with trio.fail_after(30):
                while True:
                    try:
                        if await client.execute("GET", keys[0]) == b"v":
                            break
                    except (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError):
                        errors += 1
                        await trio.sleep(0.1)
            assert cluster.owner_of(slot_of(keys[0])) is replica
            assert await client.pipeline([("GET", k) for k in keys]) == [b"v"] * 100
            print(f"requests that failed before the promotion: {errors}")


async def test_paused_primary_does_not_hold_up_the_others() -> None:
    async with RedisCluster(primaries=3, node_timeout_ms=5000) as cluster:
        async with Client.from_url(
            cluster.url, socket_timeout=0.5, connect_timeout=0.5, connect_retry_for=0.5
        ) as client:
            keys = [fresh_key() for _ in range(60)]
            await client.pipeline([("SET", k, "v") for k in keys])
            frozen = cluster.owner_of(slot_of(keys[0]))
            elsewhere = [k for k in keys if cluster.owner_of(slot_of(k)) is not frozen]
            frozen.pause()
            try:
                with pytest.raises(rex.TimeoutError):
                    await client.execute("GET", keys[0])
                # The map is stale now and the frozen node is asked last: the others answer.
                for key in elsewhere:
                    assert await client.execute("GET", key) == b"v"
                assert client._router is not None and client._router.stale is False
            finally:
                frozen.resume()
            with trio.fail_after(10):
                while True:
                    try:
                        assert await client.execute("GET", keys[0]) == b"v"
                        break
                    except (rex.ConnectionError, rex.TimeoutError):
                        await trio.sleep(0.1)
