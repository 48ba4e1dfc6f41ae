"""The transport (``actorstream._transport``) against real redis-server processes.

Servers that a test kills, pauses or reconfigures are its own (``redis_server`` & co.); the others
share one session server and keep to their own ``key_prefix``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme
from redis import exceptions as rex

from actorstream._transport import Client, Script, pack, pack_head, pack_last
from actorstream.testing import RedisServer

pytestmark = pytest.mark.filterwarnings("error")


def client_for(url: str, **kwargs: Any) -> Client:
    """A client that gives up reconnecting quickly, so failure tests stay fast."""
    kwargs.setdefault("connect_retry_for", 0.0)
    kwargs.setdefault("connect_timeout", 2.0)
    kwargs.setdefault("socket_timeout", 5.0)
    return Client.from_url(url, **kwargs)


@pytest.fixture
async def client(shared_redis_url: str) -> AsyncIterator[Client]:
    async with client_for(shared_redis_url, client_name="actorstream-test") as c:
        yield c


async def wait_until(predicate: Callable[[], Any]) -> None:
    """Poll an async predicate until true (the server handles disconnects asynchronously)."""
    with trio.fail_after(5):
        while not await predicate():
            await trio.sleep(0.01)


async def clients_named(admin: Client, name: str) -> list[str]:
    listing = (await admin.execute("CLIENT", "LIST")).decode()
    return [line for line in listing.splitlines() if f" name={name} " in f" {line} "]


# -- basics ----------------------------------------------------------------------------------


async def test_basic_commands(client: Client, key_prefix: str) -> None:
    k = key_prefix
    assert await client.execute("PING") == b"PONG"
    assert await client.execute("SET", k + "s", "v") == b"OK"
    assert await client.execute("GET", k + "s") == b"v"
    assert await client.execute("GET", k + "missing") is None
    assert await client.execute("INCRBY", k + "n", 41) == 41
    assert await client.execute("INCRBYFLOAT", k + "n", 1.5) == b"42.5"
    binary = bytes(range(256)) * 4
    assert await client.execute("SET", k + "b", binary) == b"OK"
    assert await client.execute("GET", k + "b") == binary
    assert await client.execute("SET", k + "m", memoryview(b"view")) == b"OK"
    assert await client.execute("GET", k + "m") == b"view"
    await client.execute("RPUSH", k + "l", "a", "b", "c")
    assert await client.execute("LRANGE", k + "l", 0, -1) == [b"a", b"b", b"c"]
    assert await client.execute("HSET", k + "h", "f1", "1", "f2", "2") == 2
    assert sorted(await client.execute("HGETALL", k + "h")) == [b"1", b"2", b"f1", b"f2"]
    entry_id = await client.execute("XADD", k + "x", "*", "f", "v")
    assert isinstance(entry_id, bytes)
    assert await client.execute("XRANGE", k + "x", "-", "+") == [[entry_id, [b"f", b"v"]]]
    assert await client.execute("DEL", k + "s", k + "missing") == 1
    stats = client.statistics()
    assert stats.in_use == 0
    assert stats.open_connections == stats.idle_connections == 1  # sequential: one reused
    assert stats.created_total == 1


async def test_commands_packed_already_go_as_they_are_beside_others(
    shared_redis_server: RedisServer, key_prefix: str
) -> None:
    """A command given as RESP (``pack_head`` + ``pack_last``: exactly-once outputs on one
    Redis; a Cluster routes by arguments) is sent as it is, in a pipeline and a transaction
    with ordinary commands."""
    async with client_for(shared_redis_server.url) as client:
        await packed_beside_others(client, key_prefix)


async def packed_beside_others(client: Client, k: str) -> None:
    head = pack_head(("XADD", k + "x", "*", b"f", b"json", b"d"))
    payloads = [b"", b"{}", "é".encode() * 300, bytes(range(256)) * 40]
    replies = await client.pipeline([
        ("MULTI",), *(pack_last(head, p) for p in payloads), ("SET", k + "s", 1), ("EXEC",),
        pack(("XLEN", k + "x")),
    ])
    assert replies[-1] == len(payloads) and len(replies[-2]) == len(payloads) + 1
    entries = await client.execute("XRANGE", k + "x", "-", "+")
    assert [fields for _, fields in entries] == [[b"f", b"json", b"d", p] for p in payloads]
    for args in [("SET", k + "a"), (b"HSET", k + "h", "f", 1, "g", 2.5)]:
        assert pack_last(pack_head(args), b"v" * 70000) == pack((*args, b"v" * 70000))


async def test_statistics_are_frozen(client: Client) -> None:
    stats = client.statistics()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.in_use = 3  # type: ignore[misc]


async def test_unencodable_argument_is_a_data_error(client: Client, key_prefix: str) -> None:
    with pytest.raises(rex.DataError):
        await client.execute("SET", key_prefix + "k", None)  # type: ignore[arg-type]
    assert client.statistics().in_use == 0
    assert await client.execute("PING") == b"PONG"


async def test_concurrent_requests_get_their_own_replies(
    shared_redis_url: str, key_prefix: str
) -> None:
    async with client_for(shared_redis_url, max_connections=4) as c:
        wrong: list[tuple[bytes, Any]] = []
        peak = 0

        async def one(i: int) -> None:
            nonlocal peak
            token = f"{key_prefix}{i}".encode()
            for _ in range(20):
                reply = await c.execute("ECHO", token)
                if reply != token:
                    wrong.append((token, reply))
                peak = max(peak, c.statistics().open_connections)

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
        assert wrong == []
        assert peak <= 4
        assert c.statistics().in_use == 0


# -- pipelining ------------------------------------------------------------------------------


async def test_pipeline_with_an_error_in_the_middle(client: Client, key_prefix: str) -> None:
    k = key_prefix + "p"
    replies = await client.pipeline(
        [
            ("SET", k, "1"),
            ("LPUSH", k, "x"),  # WRONGTYPE
            ("INCR", k),
            ("NOSUCHCOMMAND", "x"),
            ("GET", k),
        ]
    )
    assert replies[0] == b"OK"
    assert isinstance(replies[1], rex.ResponseError)
    assert str(replies[1]).startswith("WRONGTYPE")
    assert replies[2] == 2
    assert isinstance(replies[3], rex.ResponseError)
    assert "unknown command" in str(replies[3])
    assert replies[4] == b"2"
    # The connection is healthy and reused: an error reply is not a broken connection.
    stats = client.statistics()
    assert stats.in_use == 0
    assert stats.discarded_total == 0
    assert await client.execute("GET", k) == b"2"
    assert client.statistics().created_total == 1


async def test_pipeline_large_and_empty(client: Client, key_prefix: str) -> None:
    assert await client.pipeline([]) == []
    stream = key_prefix + "s"
    ids = await client.pipeline([("XADD", stream, "*", "i", i) for i in range(1000)])
    assert len(ids) == 1000
    assert all(isinstance(entry_id, bytes) for entry_id in ids)
    assert await client.execute("XLEN", stream) == 1000
    entries = await client.execute("XRANGE", stream, "-", "+")
    assert [e[1][1] for e in entries] == [str(i).encode() for i in range(1000)]


async def test_requests_and_replies_larger_than_the_socket_buffers(
    client: Client, key_prefix: str
) -> None:
    """A write the socket cannot take at once waits for room, and a reply arrives in many
    reads (a plain socket's round trip writes and reads its descriptor itself)."""
    value = bytes(range(256)) * (128 * 1024)  # 32 MiB each way
    assert await client.execute("SET", key_prefix + "big", value) == b"OK"
    assert await client.execute("GET", key_prefix + "big") == value
    hashed = "{" + key_prefix + "}"
    chunks = [bytes([i % 256]) * 20_000 for i in range(2000)]  # 40 MB in one pipeline
    replies = await client.pipeline([("SET", f"{hashed}{i}", c) for i, c in enumerate(chunks)])
    assert replies == [b"OK"] * len(chunks)
    got = await client.pipeline([("GET", f"{hashed}{i}") for i in range(len(chunks))])
    assert got == chunks


async def test_multi_exec_abort_in_a_pipeline(client: Client, key_prefix: str) -> None:
    replies = await client.pipeline(
        [("MULTI",), ("SET", key_prefix + "k"), ("EXEC",)]  # SET with a missing argument
    )
    assert replies[0] == b"OK"
    assert isinstance(replies[1], rex.ResponseError)
    assert isinstance(replies[2], rex.ExecAbortError)
    assert await client.execute("EXISTS", key_prefix + "k") == 0


# -- URLs: TLS, ACL, unix sockets, db, client name --------------------------------------------


async def test_rediss_with_ca_from_url(tls_redis_server: RedisServer) -> None:
    assert tls_redis_server.url.startswith("rediss://")
    async with client_for(tls_redis_server.url) as c:
        assert await c.execute("PING") == b"PONG"
        replies = await c.pipeline([("SET", "k", "v"), ("GET", "k")])
        assert replies == [b"OK", b"v"]
        big = b"x" * 300_000  # several TLS records each way
        await c.execute("SET", "big", big)
        assert await c.execute("GET", "big") == big


async def test_rediss_rejects_an_unknown_ca(tls_redis_server: RedisServer, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    url = f"rediss://127.0.0.1:{tls_redis_server.port}/0?ssl_ca_certs={other_ca}"
    async with client_for(url) as c:
        with trio.fail_after(10), pytest.raises(rex.ConnectionError):
            await c.execute("PING")


async def test_plain_redis_url_against_tls_port_fails(tls_redis_server: RedisServer) -> None:
    async with client_for(f"redis://127.0.0.1:{tls_redis_server.port}/0") as c:
        with trio.fail_after(10), pytest.raises((rex.ConnectionError, rex.TimeoutError)):
            await c.execute("PING")
        assert c.statistics().in_use == 0


async def test_rediss_with_client_certificate(mtls_redis_server: RedisServer) -> None:
    url = mtls_redis_server.url
    assert "ssl_certfile=" in url
    assert "ssl_keyfile=" in url
    async with client_for(url) as c:
        assert await c.execute("PING") == b"PONG"
    # Without the client certificate the server refuses the handshake.
    no_cert = (
        f"rediss://127.0.0.1:{mtls_redis_server.port}/0?ssl_ca_certs={mtls_redis_server.ca_path}"
    )
    async with client_for(no_cert) as c:
        with trio.fail_after(10), pytest.raises(rex.ConnectionError):
            await c.execute("PING")


async def test_acl_user_from_url(acl_redis_server: RedisServer) -> None:
    async with client_for(acl_redis_server.url_for("app", "secret")) as c:
        assert await c.execute("ACL", "WHOAMI") == b"app"
        assert await c.execute("SET", "k", "v") == b"OK"
    async with client_for(acl_redis_server.url_for("reader", "readpw")) as c:
        assert await c.execute("ACL", "WHOAMI") == b"reader"
        assert await c.execute("GET", "k") == b"v"
        with pytest.raises(rex.NoPermissionError):
            await c.execute("SET", "k", "w")
        replies = await c.pipeline([("GET", "k"), ("DEL", "k"), ("GET", "k")])
        assert replies[0] == replies[2] == b"v"
        assert isinstance(replies[1], rex.NoPermissionError)


async def test_wrong_password_is_an_authentication_error(acl_redis_server: RedisServer) -> None:
    async with client_for(acl_redis_server.url_for("app", "wrong")) as c:
        with trio.fail_after(10), pytest.raises(rex.AuthenticationError) as info:
            await c.execute("PING")
        assert "app" in str(info.value)
        assert "wrong" not in str(info.value)  # the password is never echoed
        stats = c.statistics()
        assert stats.in_use == 0
        assert stats.open_connections == 0
    async with client_for(acl_redis_server.url_for("nosuchuser", "secret")) as c:
        with trio.fail_after(10), pytest.raises(rex.AuthenticationError):
            await c.execute("PING")


async def test_wrong_password_is_not_retried(acl_redis_server: RedisServer) -> None:
    """A refused password is not transient: one connection attempt, then the error."""
    admin_url = acl_redis_server.url_for("app", "secret")
    async with client_for(admin_url) as admin:

        async def connections_received() -> int:
            info = (await admin.execute("INFO", "stats")).decode()
            return int(info.split("total_connections_received:")[1].split()[0])

        before = await connections_received()
        bad = Client.from_url(acl_redis_server.url_for("app", "wrong"), connect_retry_for=2.0)
        async with bad:
            with trio.fail_after(10), pytest.raises(rex.AuthenticationError):
                await bad.execute("PING")
        # The admin connection is pooled and reused: only the bad client's attempts count.
        assert await connections_received() - before == 1


async def test_no_credentials_when_default_user_is_off(acl_redis_server: RedisServer) -> None:
    async with client_for(acl_redis_server.url) as c:
        with trio.fail_after(10), pytest.raises(rex.AuthenticationError):
            await c.execute("PING")


async def test_requirepass_from_url() -> None:
    with RedisServer(password="pa:ss/w@rd") as server:
        async with client_for(server.url) as c:
            assert await c.execute("PING") == b"PONG"
        async with client_for(server.url_for(None, "nope")) as c:
            with trio.fail_after(10), pytest.raises(rex.AuthenticationError):
                await c.execute("PING")


async def test_unix_socket_url(unix_redis_server: RedisServer) -> None:
    url = unix_redis_server.unix_url
    assert url.startswith("unix:///")
    async with client_for(url, client_name="via-unix") as c:
        assert await c.execute("SET", "k", "v") == b"OK"
        info = (await c.execute("CLIENT", "INFO")).decode()
        assert "name=via-unix" in info
        assert f"laddr={unix_redis_server.unix_socket_path}" in info
    async with client_for(unix_redis_server.unix_url_for(None, None, db=5)) as c:
        assert await c.execute("GET", "k") is None
        assert " db=5 " in (await c.execute("CLIENT", "INFO")).decode()


async def test_db_from_url(redis_server: RedisServer) -> None:
    async with client_for(redis_server.url_for(None, None, db=3)) as c3:
        await c3.execute("SET", "k", "three")
        info = (await c3.execute("CLIENT", "INFO")).decode()
        assert " db=3 " in info
    async with client_for(redis_server.url) as c0:
        assert await c0.execute("GET", "k") is None
        assert await c0.execute("SELECT", 3) == b"OK"  # on this pooled connection only
    async with client_for(f"redis://127.0.0.1:{redis_server.port}?db=3") as c:
        assert await c.execute("GET", "k") == b"three"


async def test_client_name_in_client_list(client: Client, shared_redis_url: str) -> None:
    async with client_for(shared_redis_url, client_name="worker-7", max_connections=3) as c:

        async def busy() -> None:
            await c.execute("DEBUG", "SLEEP", "0.05")

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(busy)
        assert c.statistics().open_connections == 3
        named = await clients_named(client, "worker-7")
        assert len(named) == 3
        assert await c.execute("CLIENT", "GETNAME") == b"worker-7"
    # aclose closes every idle connection, and the server sees them go.
    await wait_until(lambda: _none_named(client, "worker-7"))


async def _none_named(admin: Client, name: str) -> bool:
    return not await clients_named(admin, name)


async def _count_named(admin: Client, name: str, count: int) -> bool:
    return len(await clients_named(admin, name)) == count


async def test_default_client_name(shared_redis_url: str) -> None:
    async with Client.from_url(shared_redis_url) as c:
        name = (await c.execute("CLIENT", "GETNAME")).decode()
        assert name.startswith("actorstream:")


# -- reconnect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("aof", [True, False], ids=["aof", "no-aof"])
async def test_reconnect_after_kill_9_and_restart(aof: bool) -> None:
    with RedisServer(appendonly=aof) as server:
        async with client_for(server.url, max_connections=4) as c:
            await c.execute("SET", "k", "v")
            await c.execute("XADD", "s", "*", "f", "v")
            if aof:
                await trio.sleep(1.1)  # appendfsync everysec
            created = c.statistics().created_total

            server.kill()
            # While it is down, every request fails promptly with ConnectionError.
            for _ in range(3):
                with trio.fail_after(5), pytest.raises(rex.ConnectionError):
                    await c.execute("GET", "k")
            with trio.fail_after(5), pytest.raises(rex.ConnectionError):
                await c.pipeline([("GET", "k"), ("XLEN", "s")])
            assert c.statistics().in_use == 0

            server.restart()
            assert await c.execute("PING") == b"PONG"
            if aof:
                assert await c.execute("GET", "k") == b"v"
                assert await c.execute("XLEN", "s") == 1
            else:
                assert await c.execute("GET", "k") is None
            stats = c.statistics()
            assert stats.created_total > created
            assert stats.in_use == 0


async def test_request_waits_for_a_restart_within_connect_retry(redis_server: RedisServer) -> None:
    """Connecting is retried with backoff (nothing was sent yet), so a quick restart is bridged."""
    async with client_for(redis_server.url, connect_retry_for=5.0) as c:
        await c.execute("SET", "k", "v")
        redis_server.kill()
        with pytest.raises(rex.ConnectionError):  # the request in flight on the dead socket
            await c.execute("PING")
        result: list[Any] = []

        async def request() -> None:
            result.append(await c.execute("PING"))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(request)
                await trio.sleep(0.3)
                assert result == []
                redis_server.restart()
        assert result == [b"PONG"]


async def test_idle_pool_connections_are_dropped_after_a_loss(redis_server: RedisServer) -> None:
    """One restart costs one failed request, not one per pooled connection."""
    async with client_for(redis_server.url, max_connections=4) as c:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(c.execute, "DEBUG", "SLEEP", "0.05")
        assert c.statistics().idle_connections == 4
        redis_server.kill()
        redis_server.restart()
        with pytest.raises(rex.ConnectionError):
            await c.execute("PING")
        assert await c.execute("PING") == b"PONG"
        assert c.statistics().in_use == 0


async def test_connection_refused(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.kill()
    async with client_for(f"redis://127.0.0.1:{port}/0") as c:
        with trio.fail_after(5), pytest.raises(rex.ConnectionError, match=str(port)):
            await c.execute("PING")


async def test_closed_client_refuses_requests(shared_redis_url: str) -> None:
    c = client_for(shared_redis_url)
    await c.execute("PING")
    await c.aclose()
    assert c.statistics().open_connections == 0
    with pytest.raises(rex.ConnectionError):
        await c.execute("PING")


# -- cancellation --------------------------------------------------------------------------------


async def test_cancellation_storm(shared_redis_url: str, key_prefix: str, client: Client) -> None:
    """1,000+ random cancels mid-request: no wrong reply ever, no leak, pool still usable."""
    await cancellation_storm(shared_redis_url, client, key_prefix, target_cancels=1000)


async def test_cancellation_storm_over_tls(tls_redis_server: RedisServer) -> None:
    """The same over TLS, where a cancel can also land mid-record."""
    async with client_for(tls_redis_server.url) as admin:
        await cancellation_storm(tls_redis_server.url, admin, "tls:", target_cancels=300)


async def cancellation_storm(url: str, admin: Client, key_prefix: str, target_cancels: int) -> None:
    rng = random.Random(1234)
    name = "storm-" + key_prefix.split(":")[0]
    wrong: list[str] = []
    counters = {"cancelled": 0, "completed": 0}
    echo = Script("return ARGV[1]", name="echo")

    async with client_for(url, client_name=name, max_connections=24) as c:

        def mid_request_cancels() -> int:
            # Every discarded connection here is one a cancel closed between write and reply.
            return c.statistics().discarded_total

        async def one_request(task: int, seq: int) -> None:
            token = f"{task}:{seq}:{rng.random()}"
            kind = rng.randrange(4)
            if kind == 0:
                reply = await c.execute("ECHO", token)
                if reply != token.encode():
                    wrong.append(f"ECHO {token} -> {reply!r}")
            elif kind == 1:
                reply = await c.execute("INCR", f"{key_prefix}incr:{token}")
                if reply != 1:
                    wrong.append(f"INCR fresh key {token} -> {reply!r}")
            elif kind == 2:
                replies = await c.pipeline([("ECHO", f"{token}:{i}") for i in range(5)])
                if replies != [f"{token}:{i}".encode() for i in range(5)]:
                    wrong.append(f"pipeline {token} -> {replies!r}")
            else:
                reply = await c.evalsha(echo, keys=[], args=[token])
                if reply != token.encode():
                    wrong.append(f"evalsha {token} -> {reply!r}")

        async def worker(task: int) -> None:
            seq = 0
            while mid_request_cancels() < target_cancels:
                seq += 1
                async with trio.open_nursery() as nursery:
                    scope = trio.CancelScope()

                    async def run(scope: trio.CancelScope = scope, seq: int = seq) -> None:
                        with scope:
                            await one_request(task, seq)

                    nursery.start_soon(run)
                    if rng.random() < 0.8:
                        # Cancel after a random number of scheduler ticks: before the write,
                        # between write and reply (most), or while waiting for a pool slot.
                        for _ in range(rng.randrange(8)):
                            await trio.lowlevel.checkpoint()
                        scope.cancel()
                if scope.cancelled_caught:
                    counters["cancelled"] += 1
                else:
                    counters["completed"] += 1

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for task in range(32):
                    nursery.start_soon(worker, task)

        stats = c.statistics()
        assert wrong == []
        assert stats.discarded_total >= target_cancels, stats
        assert counters["cancelled"] >= target_cancels
        assert counters["completed"] > 100
        assert stats.in_use == 0, stats
        assert stats.dedicated == 0, stats
        assert stats.open_connections == stats.idle_connections <= 24, stats
        assert stats.created_total - stats.discarded_total == stats.open_connections, stats

        # Still usable, with correct replies, and concurrently at full width.
        async def check(i: int) -> None:
            for j in range(10):
                token = f"after:{i}:{j}"
                assert await c.execute("ECHO", token) == token.encode()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(check, i)
        assert c.statistics().in_use == 0

        # The server agrees: only the pool's idle connections remain open.
        async def server_sees_only_idle() -> bool:
            return len(await clients_named(admin, name)) == c.statistics().open_connections

        await wait_until(server_sees_only_idle)


async def test_cancel_while_waiting_for_a_pool_slot(shared_redis_url: str) -> None:
    async with client_for(shared_redis_url, max_connections=1) as c:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.execute, "DEBUG", "SLEEP", "0.2")
            await trio.sleep(0.05)
            with trio.move_on_after(0.05) as scope:
                await c.execute("PING")  # waits for the only slot
            assert scope.cancelled_caught
        stats = c.statistics()
        assert stats.in_use == 0
        assert stats.discarded_total == 0  # nothing was in flight on the cancelled request
        assert await c.execute("PING") == b"PONG"


# -- blocking reads ------------------------------------------------------------------------------


async def test_blocking_read_on_dedicated_connection_does_not_starve_pool(
    shared_redis_url: str, key_prefix: str
) -> None:
    stream = key_prefix + "s"
    async with client_for(shared_redis_url, max_connections=1) as c:
        await c.execute("XGROUP", "CREATE", stream, "g", "$", "MKSTREAM")
        got: list[Any] = []
        blocking = trio.Event()

        async def reader() -> None:
            async with c.dedicated() as conn:
                blocking.set()
                got.append(
                    await conn.execute(
                        "XREADGROUP", "GROUP", "g", "c1", "BLOCK", 5000,
                        "STREAMS", stream, ">",
                        timeout=None,
                    )
                )  # fmt: skip

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await blocking.wait()
                await trio.sleep(0.05)
                # The pool's only connection keeps serving while the reader BLOCKs.
                for i in range(50):
                    assert await c.execute("ECHO", str(i)) == str(i).encode()
                stats = c.statistics()
                assert stats.dedicated == 1
                assert stats.in_use == 0
                assert stats.open_connections == 2
                entry_id = await c.execute("XADD", stream, "*", "f", "v")
        assert got == [[[stream.encode(), [[entry_id, [b"f", b"v"]]]]]]
        stats = c.statistics()
        assert stats.dedicated == 0
        assert stats.open_connections == 1


async def test_cancelled_blocking_read_loses_no_delivery(
    client: Client, shared_redis_url: str, key_prefix: str
) -> None:
    """Cancelling a BLOCKed XREADGROUP closes its connection; no entry lands in the PEL."""
    stream = key_prefix + "s"
    name = "blocker-" + key_prefix.split(":")[0].strip("{")
    await client.execute("XGROUP", "CREATE", stream, "g", "$", "MKSTREAM")
    async with client_for(shared_redis_url, client_name=name) as c:
        await c.execute("PING")  # its pooled connection (on a Cluster, also the slot map's)
        pooled = len(await clients_named(client, name))
        with trio.move_on_after(0.2) as scope:
            async with c.dedicated() as conn:
                await conn.execute(
                    "XREADGROUP", "GROUP", "g", "c1", "BLOCK", 0, "STREAMS", stream, ">",
                    timeout=None,
                )  # fmt: skip
        assert scope.cancelled_caught
        await wait_until(lambda: _count_named(client, name, pooled))
    await client.execute("XADD", stream, "*", "f", "v")
    assert (await client.execute("XPENDING", stream, "g"))[0] == 0
    entries = await client.execute(
        "XREADGROUP", "GROUP", "g", "c2", "COUNT", 10, "STREAMS", stream, ">"
    )
    assert len(entries[0][1]) == 1


# -- Lua -----------------------------------------------------------------------------------------


async def test_evalsha_reloads_after_script_flush(redis_server: RedisServer) -> None:
    script = Script("return redis.call('GET', KEYS[1])", name="get")
    async with client_for(redis_server.url) as c:
        await c.execute("SET", "k", "v1")
        assert await c.evalsha(script, keys=["k"], args=[]) == b"v1"  # loaded on first use
        assert await c.execute("SCRIPT", "EXISTS", script.sha) == [1]
        assert await c.execute("SCRIPT", "FLUSH") == b"OK"
        assert await c.execute("SCRIPT", "EXISTS", script.sha) == [0]
        await c.execute("SET", "k", "v2")
        assert await c.evalsha(script, keys=["k"]) == b"v2"  # NOSCRIPT -> load -> retry
        assert await c.execute("SCRIPT", "EXISTS", script.sha) == [1]
        # A server restart (no persistence) forgets scripts too.
        redis_server.kill()
        redis_server.restart()
        with pytest.raises(rex.ConnectionError):
            await c.execute("PING")
        await c.execute("SET", "k", "v3")
        assert await c.evalsha(script, keys=["k"]) == b"v3"
        assert c.statistics().in_use == 0


async def test_script_errors(client: Client, key_prefix: str) -> None:
    await client.execute("RPUSH", key_prefix + "l", "x")
    incr = Script("return redis.call('INCR', KEYS[1])")
    with pytest.raises(rex.ResponseError, match="WRONGTYPE"):
        await client.evalsha(incr, keys=[key_prefix + "l"])
    broken = Script("this is not lua")
    with pytest.raises(rex.ResponseError):
        await client.evalsha(broken)
    assert await client.evalsha(Script("return {1, 'two', KEYS[1]}"), keys=["k"]) == [
        1,
        b"two",
        b"k",
    ]
    assert client.statistics().in_use == 0


async def test_unknown_sha_is_noscript(client: Client) -> None:
    with pytest.raises(rex.NoScriptError):
        await client.execute("EVALSHA", "0" * 40, 0)


# -- timeouts ------------------------------------------------------------------------------------


async def test_socket_timeout_against_paused_server(redis_server: RedisServer) -> None:
    async with client_for(redis_server.url, socket_timeout=0.2, connect_timeout=0.3) as c:
        assert await c.execute("PING") == b"PONG"
        redis_server.pause()
        try:
            with trio.fail_after(5), pytest.raises(rex.TimeoutError):
                await c.execute("PING")
            stats = c.statistics()
            assert stats.in_use == 0
            assert stats.discarded_total == 1  # the timed-out connection is never reused
            assert stats.open_connections == 0
            # A new connection to a paused server: TCP connects, the handshake times out.
            with trio.fail_after(5), pytest.raises(rex.TimeoutError):
                await c.execute("PING", timeout=0.1)
        finally:
            redis_server.resume()
        assert await c.execute("PING") == b"PONG"
        assert c.statistics().in_use == 0


async def test_per_call_timeout(client: Client) -> None:
    with trio.fail_after(5), pytest.raises(rex.TimeoutError):
        await client.execute("DEBUG", "SLEEP", "0.5", timeout=0.05)
    assert client.statistics().in_use == 0
    assert await client.execute("ECHO", "fresh") == b"fresh"  # not the late +OK


# -- error mapping -------------------------------------------------------------------------------


async def test_error_mapping(client: Client, key_prefix: str) -> None:
    k = key_prefix
    await client.execute("SET", k + "str", "v")
    with pytest.raises(rex.ResponseError, match=r"^WRONGTYPE") as wrongtype:
        await client.execute("LPUSH", k + "str", "x")
    assert type(wrongtype.value) is rex.ResponseError
    await client.execute("XGROUP", "CREATE", k + "s", "g", "$", "MKSTREAM")
    with pytest.raises(rex.ResponseError, match=r"^BUSYGROUP"):
        await client.execute("XGROUP", "CREATE", k + "s", "g", "$", "MKSTREAM")
    with pytest.raises(rex.ResponseError, match="NOGROUP"):
        await client.execute("XREADGROUP", "GROUP", "nogroup", "c", "STREAMS", k + "s", ">")
    with pytest.raises(rex.ResponseError, match="unknown command"):
        await client.execute("NOSUCHCOMMAND")
    with pytest.raises(rex.ResponseError, match="wrong number of arguments"):
        await client.execute("GET")
    assert client.statistics().discarded_total == 0  # error replies never cost a connection


async def test_readonly_replica_is_readonly_error() -> None:
    with RedisServer() as primary, RedisServer() as replica:
        async with client_for(replica.url) as c:
            await c.execute("REPLICAOF", "127.0.0.1", primary.port)
            with pytest.raises(rex.ReadOnlyError):
                await c.execute("SET", "k", "v")
            replies = await c.pipeline([("GET", "k"), ("SET", "k", "v")])
            assert replies[0] is None
            assert isinstance(replies[1], rex.ReadOnlyError)
            await c.execute("REPLICAOF", "NO", "ONE")
            assert await c.execute("SET", "k", "v") == b"OK"


async def test_maxmemory_is_out_of_memory_error() -> None:
    with RedisServer(maxmemory="2mb") as server:
        async with client_for(server.url) as c:
            with pytest.raises(rex.OutOfMemoryError):
                for i in range(100):
                    await c.execute("SET", f"k{i}", b"x" * 100_000)
            assert await c.execute("PING") == b"PONG"  # reads and PING still work


async def test_evalsha_many_reloads_after_script_flush(redis_url: str) -> None:
    """A pipeline of EVALSHA: only the calls answered NOSCRIPT run again, each exactly once."""
    script = Script("return redis.call('INCR', KEYS[1])")
    async with client_for(redis_url) as c:
        await c.execute("SCRIPT", "FLUSH")
        a, b = "{t}a", "{t}b"
        replies = await c.evalsha_many(script, [([a], []), ([b], []), ([a], [])])
        assert replies == [1, 1, 2]
        assert await c.execute("MGET", a, b) == [b"2", b"1"]
        replies = await c.evalsha_many(script, [([a], [])])  # loaded now: one round trip
        assert replies == [3]
