"""Shared fixtures: real redis-server processes on free ports, and worker subprocesses.

Isolation comes two ways: a fresh server per test (``redis_server``, ~20 ms, for tests that kill,
pause or restart it), or one session-wide server with a unique key prefix per test
(``shared_redis_server`` + ``key_prefix``) for tests that only read and write keys.
Never the Redis on 127.0.0.1:6379.

The Cluster guard: ``shared_redis_url`` and ``redis_url`` also run each test against a single
node in Cluster mode that owns all 16384 slots (``cluster_node``), where any command that touches
two slots fails with CROSSSLOT. ``redis_url`` does so only for tests that do not also take
``redis_server`` (those kill or reconfigure the very server the URL names) and are not listed in
``CLUSTER_GUARD_PENDING`` (with the reason each still fails there).
"""

from __future__ import annotations

import gc
import inspect
import itertools
import re
import warnings
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

from actorstream.testing import RedisCluster, RedisServer, WorkerProcess

# No per-example deadline: a timing is no pass/fail criterion, and on a shared 2-core machine
# running the suite in parallel a pure example can take longer than Hypothesis' 200 ms.
settings.register_profile("actorstream", deadline=None)
settings.load_profile("actorstream")

#: ACL users of ``acl_redis_server``: ``app`` may do everything, ``reader`` only read.
ACL_USERS = (
    "user app on >secret ~* &* +@all",
    "user reader on >readpw ~* &* -@all +@read +ping +hello +client +select +acl|whoami",
)


@pytest.fixture(autouse=True)
def _garbage_of_its_own(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that turns warnings into errors answers for its own unclosed sockets, not for
    another test's that the garbage collector happens to finalize during it (with ``-n``, any
    test may have run before it in the same process): earlier garbage is collected quietly
    first, its own at its teardown, under its warning filters."""
    strict = any(m.args[:1] == ("error",) for m in request.node.iter_markers("filterwarnings"))
    if strict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gc.collect()
    yield
    if strict:
        gc.collect()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh server of this test's own: kill it, pause it, restart it at will."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_node() -> Iterator[RedisCluster]:
    """One Redis in Cluster mode owning every slot (the CROSSSLOT guard); shared, flushed per
    test by ``redis_url`` and keyed by ``key_prefix`` for ``shared_redis_url``."""
    with RedisCluster(primaries=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_3() -> Iterator[RedisCluster]:
    """Three primaries, shared; ``redis_url``'s ``cluster3`` variant flushes them per test."""
    with RedisCluster(primaries=3) as cluster:
        yield cluster


#: Tests that take ``redis_url`` but cannot run a Cluster variant yet (node id substring ->
#: why). They run on one Redis only until fixed.
CLUSTER_GUARD_PENDING: dict[str, str] = {
    "test_metrics_after_n_events_match_counts_and_xinfo": (
        "it reads absolute values of process-global Prometheus counters, so its second variant "
        "in one pytest process sees both runs' counts (it passes on a Cluster node alone)"
    ),
}

#: Modules whose ``redis_url`` tests also run on three primaries: the operator tools (``top``,
#: ``status``, ``dlq``) must give the same answers there as on one Redis.
ON_THREE_PRIMARIES = ("test_cli.py", "test_top.py", "test_deadletter.py")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" not in metafunc.fixturenames:
        return
    modes = ["single"]
    takes_server = "redis_server" in inspect.signature(metafunc.function).parameters
    pending = any(k in metafunc.definition.nodeid for k in CLUSTER_GUARD_PENDING)
    if not takes_server and not pending:
        modes.append("cluster")
        if metafunc.definition.path.name in ON_THREE_PRIMARIES:
            modes.append("cluster3")
    metafunc.parametrize("redis_url", modes, indirect=True)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A fresh server's URL; or the shared Cluster node (``cluster``) or three primaries
    (``cluster3``), flushed."""
    mode = getattr(request, "param", "single")
    if mode in ("cluster", "cluster3"):
        name = "cluster_node" if mode == "cluster" else "cluster_3"
        cluster: RedisCluster = request.getfixturevalue(name)
        for node in cluster.primaries:
            node.call("FLUSHALL")
            node.call("SCRIPT", "FLUSH")
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def aof_redis_server() -> Iterator[RedisServer]:
    """A fresh server with AOF (everysec): data survives kill -9 + ``restart()``."""
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
def tls_redis_server() -> Iterator[RedisServer]:
    """TLS only; ``url`` is ``rediss://...?ssl_ca_certs=...``. No client certificate needed."""
    with RedisServer(tls=True) as server:
        yield server


@pytest.fixture
def mtls_redis_server() -> Iterator[RedisServer]:
    """TLS that requires a client certificate (``tls-auth-clients yes``); ``url`` names it."""
    with RedisServer(tls=True, tls_auth_clients=True) as server:
        yield server


@pytest.fixture
def acl_redis_server() -> Iterator[RedisServer]:
    """ACL users ``app``/``secret`` (all rights) and ``reader``/``readpw`` (read only).

    The default user is off: ``url_for("app", "secret")`` is the way in.
    """
    with RedisServer(acl_users=[*ACL_USERS, "user default off"]) as server:
        yield server


@pytest.fixture
def unix_redis_server() -> Iterator[RedisServer]:
    """Listens on TCP and on a unix socket (``unix_url``)."""
    with RedisServer(unix_socket=True) as server:
        yield server


@pytest.fixture(scope="session")
def shared_redis_server() -> Iterator[RedisServer]:
    """One server for the whole session; pair it with ``key_prefix``. Never kill or flush it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["single", "cluster"])
def shared_redis_url(request: pytest.FixtureRequest) -> str:
    """The shared server, or the shared Cluster node: every user runs on both."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("cluster_node")
        return cluster.url
    server: RedisServer = request.getfixturevalue("shared_redis_server")
    return server.url


_prefix_counter = itertools.count()


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test, e.g. ``{t17:test_pipeline}:``, on the shared server.

    One hash tag: all keys of a test share a Cluster slot, so multi-key commands work on the
    Cluster variant as on one Redis.
    """
    name = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name)[:40]
    return f"{{t{next(_prefix_counter)}:{name}}}:"


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def worker_process() -> Iterator[WorkerFactory]:
    """Factory: ``worker_process("-m", "mod", redis_url=url)`` starts a worker subprocess.

    Takes ``WorkerProcess``'s arguments; every worker is killed (even paused) at test end. On a
    test failure the outputs are printed, so they show in the report.
    """
    workers: list[WorkerProcess] = []

    def start(*args: str, **kwargs: object) -> WorkerProcess:
        worker = WorkerProcess(*args, **kwargs)  # type: ignore[arg-type]
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.close()
        output = worker.output()
        if output:
            print(f"--- output of {worker!r}:\n{output[-5000:]}")
        worker.cleanup()
