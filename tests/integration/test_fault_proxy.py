"""``FaultProxy``: every fault switch, against a real redis-server.

Byte-level checks use raw trio sockets speaking RESP (so nothing retries or reconnects behind the
test's back); client-level checks use actorstream's own ``Client`` and, from a synchronous test,
redis-py. Delays are only ever asserted to be *at least* the configured latency; the "nothing
arrives" checks wait a bounded while, which a slow machine can only make pass, never fail.
"""

from __future__ import annotations

import math

import pytest
import redis
import trio
from redis import exceptions as rex

from actorstream._transport import Client
from actorstream.testing import FaultProxy, RedisServer

QUIET = 0.3  # how long "nothing arrives" is watched for


async def connect(proxy: FaultProxy) -> trio.SocketStream:
    return await trio.open_tcp_stream(proxy.host, proxy.port)


async def send(stream: trio.SocketStream, *commands: str) -> None:
    """Inline RESP commands (``PING``, ``RPUSH l 1``), one write each."""
    for command in commands:
        await stream.send_all(command.encode() + b"\r\n")


async def receive(stream: trio.SocketStream, want: bytes, timeout: float = 10.0) -> bytes:
    """Read until ``want`` has arrived; everything read."""
    data = b""
    with trio.fail_after(timeout):
        while want not in data:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                raise AssertionError(f"connection closed after {data!r}, waiting for {want!r}")
            data += chunk
    return data


async def silent(stream: trio.SocketStream, seconds: float = QUIET) -> bytes:
    """Whatever arrives within ``seconds`` (b"" when nothing did); fails if the socket closes."""
    data = b""
    with trio.move_on_after(seconds):
        while True:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                raise AssertionError(f"connection closed (after {data!r}); it should stay open")
            data += chunk
    return data


async def test_passes_commands_through_keeping_auth_and_db() -> None:
    async with RedisServer(password="s3cret") as server:
        target = server.url_for(None, "s3cret", db=3)
        async with (
            FaultProxy(target) as proxy,
            Client.from_url(proxy.url) as via,
            Client.from_url(target) as direct,
        ):
            assert proxy.url == target.replace(f":{server.port}/", f":{proxy.port}/")
            assert ":s3cret@" in proxy.url and proxy.url.endswith("/3")
            await via.execute("SET", "k", "v")
            assert await direct.execute("GET", "k") == b"v"  # database 3, through AUTH
            stats = proxy.statistics()
            assert stats.connections == 1 and stats.accepted == 1 and stats.delivered_bytes > 0


async def test_partition_holds_bytes_both_ways_and_heal_delivers_them_in_order(
    redis_server: RedisServer,
) -> None:
    async with FaultProxy(redis_server.url) as proxy, Client.from_url(redis_server.url) as direct:
        pusher, waiter = await connect(proxy), await connect(proxy)
        await send(waiter, "BLPOP wake 0")  # the server's reply will be held on its way back
        await send(pusher, "PING")
        await receive(pusher, b"+PONG")
        with trio.fail_after(10):
            while not await _blocked(direct):
                await trio.sleep(0.01)
        proxy.partition()
        await send(pusher, *(f"RPUSH l {i}" for i in range(20)))
        await direct.execute("RPUSH", "wake", "up")  # BLPOP answers now, into the partition
        late = await connect(proxy)  # a new connection hangs too
        await send(late, "PING")
        assert await silent(waiter) == b"" and await silent(pusher) == b""
        assert await silent(late) == b""
        assert await direct.execute("LRANGE", "l", 0, -1) == []  # nothing reached Redis
        assert proxy.statistics().buffered_bytes > 0 and proxy.statistics().partitioned

        proxy.heal()
        replies = await receive(pusher, b":20\r\n")
        assert replies == b"".join(f":{i + 1}\r\n".encode() for i in range(20))
        assert await direct.execute("LRANGE", "l", 0, -1) == [str(i).encode() for i in range(20)]
        assert b"up" in await receive(waiter, b"up")
        await receive(late, b"+PONG")
        assert proxy.statistics().buffered_bytes == 0
        assert not proxy.errors


async def _blocked(client: Client) -> bool:
    info = await client.execute("INFO", "clients")
    return b"blocked_clients:1" in info


async def test_blackhole_keeps_sockets_half_open_for_good(redis_server: RedisServer) -> None:
    async with FaultProxy(redis_server.url) as proxy:
        old = await connect(proxy)
        await send(old, "PING")
        await receive(old, b"+PONG")
        proxy.blackhole()
        during = await connect(proxy)
        await send(old, "PING")
        await send(during, "PING")
        assert await silent(old) == b"" and await silent(during) == b""
        proxy.heal()
        await send(old, "PING")
        # Never delivered and never closed, even after heal(): silent() fails on a close.
        assert await silent(old) == b"" and await silent(during) == b""
        await old.send_eof()  # the client gives up: its FIN goes nowhere either
        assert await silent(old) == b""
        stats = proxy.statistics()
        assert stats.blackholed == 2 and stats.connections == 2
        fresh = await connect(proxy)
        await send(fresh, "PING")
        await receive(fresh, b"+PONG")  # new connections after heal() work
        assert not proxy.errors


async def test_reset_is_seen_by_the_client_as_a_connection_error(
    redis_server: RedisServer,
) -> None:
    async with FaultProxy(redis_server.url) as proxy:
        raw = await connect(proxy)
        await send(raw, "PING")
        await receive(raw, b"+PONG")
        async with Client.from_url(proxy.url, connect_retry_for=0.0) as client:
            assert await client.execute("PING") == b"PONG"
            proxy.reset()
            # An RST, not a FIN: the read fails (ECONNRESET) instead of returning b"".
            with pytest.raises(trio.BrokenResourceError), trio.fail_after(10):
                while True:
                    await raw.receive_some(1024)
            with pytest.raises(rex.ConnectionError):
                await client.execute("PING")
            assert await client.execute("PING") == b"PONG"  # new connections work at once
        assert proxy.statistics().resets == 1
        assert not proxy.errors


async def test_latency_delays_each_direction_and_keeps_order(redis_server: RedisServer) -> None:
    async with FaultProxy(redis_server.url, seed=1) as proxy:
        stream = await connect(proxy)
        proxy.latency(50, jitter_ms=20)
        started = trio.current_time()
        await send(stream, *("INCR n" for _ in range(30)))  # 30 chunks, jittered each
        replies = await receive(stream, b":30\r\n")
        # Each way at least 50 - 20 ms: a round trip at least 60 ms.
        assert trio.current_time() - started >= 0.060
        assert replies == b"".join(f":{i + 1}\r\n".encode() for i in range(30))
        proxy.latency(80)
        started = trio.current_time()
        await send(stream, "PING")
        await receive(stream, b"+PONG")
        assert trio.current_time() - started >= 0.160
        assert proxy.statistics().latency_ms == 80
        proxy.latency(0)
        await send(stream, "PING")
        await receive(stream, b"+PONG")


async def test_bandwidth_paces_each_direction(redis_server: RedisServer) -> None:
    value = b"x" * 300_000
    async with FaultProxy(redis_server.url) as proxy, Client.from_url(proxy.url) as client:
        await client.execute("SET", "big", value)
        proxy.bandwidth(1_000_000)
        started = trio.current_time()
        assert await client.execute("GET", "big") == value
        # 300 kB at 1 MB/s, minus the first ~20 ms piece that goes at once.
        assert trio.current_time() - started >= 0.25
        proxy.bandwidth(None)
        assert proxy.statistics().bandwidth is None
        assert await client.execute("GET", "big") == value


def test_sync_use_runs_the_proxy_in_a_thread(redis_server: RedisServer) -> None:
    """From a plain test, with any client (redis-py here)."""
    with FaultProxy(redis_server.url) as proxy:
        r = redis.Redis.from_url(proxy.url, socket_timeout=0.5)
        try:
            assert r.ping()
            proxy.partition()
            with pytest.raises(rex.TimeoutError):
                r.ping()
            proxy.heal()
            proxy.reset()
            r2 = redis.Redis.from_url(proxy.url, socket_timeout=5)
            assert r2.ping()
            r2.close()
        finally:
            r.close()
    with pytest.raises(RuntimeError, match="closed"):
        proxy.start()


async def test_sync_api_from_a_trio_test(redis_server: RedisServer) -> None:
    """``with`` (a thread of its own) works inside a trio test too; the switches don't block."""
    with FaultProxy(redis_server.url) as proxy:
        async with Client.from_url(proxy.url) as client:
            proxy.latency(20)
            started = trio.current_time()
            assert await client.execute("PING") == b"PONG"
            assert trio.current_time() - started >= 0.040


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        FaultProxy("unix:///tmp/redis.sock")
    proxy = FaultProxy("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match="not been started"):
        _ = proxy.url
    with pytest.raises(RuntimeError, match="not running"):
        proxy.partition()
    with proxy:
        with pytest.raises(ValueError, match=">= 0 ms"):
            proxy.latency(-1)
        with pytest.raises(ValueError, match="> 0 bytes/s"):
            proxy.bandwidth(0)
        assert math.isclose(proxy.statistics().latency_ms, 0.0)
        with pytest.raises(RuntimeError, match="already running"):
            proxy.start()


async def test_tls_passes_through_end_to_end() -> None:
    """The proxy forwards bytes: TLS runs between the client and Redis, CA options kept."""
    async with RedisServer(tls=True) as server, FaultProxy(server.url) as proxy:
        assert proxy.url.startswith("rediss://") and "ssl_ca_certs=" in proxy.url
        async with Client.from_url(proxy.url) as client:
            assert await client.execute("PING") == b"PONG"
            proxy.reset()
            with pytest.raises(rex.ConnectionError):
                await client.execute("PING")
