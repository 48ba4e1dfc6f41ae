"""The transport under network faults (a ``FaultProxy`` between the client and Redis)."""

from __future__ import annotations

import pytest
import trio
from redis import exceptions as rex

from actorstream._transport import Client
from actorstream.testing import FaultProxy, RedisServer


async def test_half_open_path_costs_one_timeout_not_one_per_pooled_connection(
    redis_server: RedisServer,
) -> None:
    """Every pooled connection goes half-open at once: the first request waits out its timeout,
    and the pool then drops the other idle connections instead of trying each in turn."""
    async with (
        FaultProxy(redis_server.url) as proxy,
        Client.from_url(proxy.url, socket_timeout=0.5) as client,
    ):
        async with trio.open_nursery() as nursery:  # fill the pool: 8 connections, all idle
            for _ in range(8):
                nursery.start_soon(client.execute, "DEBUG", "SLEEP", "0.05")
        assert client.statistics().idle_connections == 8
        proxy.blackhole()
        proxy.heal()  # new connections work; the 8 old ones are silent for good
        with pytest.raises(rex.TimeoutError):
            await client.execute("PING")
        assert client.statistics().idle_connections == 0
        with trio.fail_after(5):  # a fresh connection, not another 0.5 s timeout per old one
            for _ in range(8):
                assert await client.execute("PING", timeout=0.4) == b"PONG"
        assert proxy.statistics().blackholed == 8
