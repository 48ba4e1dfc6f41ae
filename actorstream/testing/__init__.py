"""Helpers to test actors against a real Redis: a harness, servers, workers, network faults.

``Harness`` runs a System's actors in-process on a fresh ``redis-server``: send events, wait
until Redis says they are all handled, and check what the handlers did::

    from actorstream.testing import Harness

    async def test_bills():
        async with Harness(system) as h:
            await orders.send(Order(order_id=1, amount=5))
            await h.wait_idle()
            assert await h.dead_letters() == []

``actorstream.testing.pytest_plugin`` gives pytest fixtures for both (docs/testing.md).

actorstream is tested against real ``redis-server`` processes, never mocks: the behaviour that
matters (fencing scripts, pending lists, reconnects, a server that dies mid-request) only exists in
a real server. These helpers are public so that you can test your own actors the same way::

    from actorstream.testing import RedisServer, WorkerProcess

    def test_survives_redis_restart():
        with RedisServer(appendonly=True) as redis:
            with WorkerProcess("-m", "actorstream", "worker", "app:system",
                               redis_url=redis.url) as worker:
                ...
                redis.kill()        # kill -9
                redis.restart()     # same port, same dir: the AOF comes back
                ...

``FaultProxy`` sits between a worker and a Redis and injects network faults at run time
(partition and heal, half-open sockets, resets, latency, bandwidth)::

    with RedisServer() as redis, FaultProxy(redis.url) as proxy:
        with WorkerProcess("-m", "actorstream", "worker", "app:system",
                           redis_url=proxy.url) as worker:
            proxy.partition()   # bytes held both ways; heal() delivers them late, in order
            ...

Every server runs on a free port with a temporary directory of its own, so tests are isolated and
can run in parallel. Starting one takes a few milliseconds; the blocking waits in this module are
short and bounded, so the synchronous API can be used from trio tests as well. Readiness is
checked over actorstream's own trio transport (there is no second Redis client here).

Nothing here depends on pytest. ``trustme`` is needed only for ``RedisServer(tls=True)``.
"""

from .._servers.process import find_redis_server
from .._servers.server import RedisServer
from .._testkit.cluster import ClusterNode, RedisCluster, SlotMove
from .._testkit.harness import Harness, NotIdle
from .._testkit.proxy import FaultProxy, ProxyStatistics
from .._testkit.worker import WorkerProcess

__all__ = [
    "ClusterNode",
    "FaultProxy",
    "Harness",
    "NotIdle",
    "ProxyStatistics",
    "RedisCluster",
    "RedisServer",
    "SlotMove",
    "WorkerProcess",
    "find_redis_server",
]
