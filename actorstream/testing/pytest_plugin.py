"""pytest fixtures for testing your actors: enable with ``pytest_plugins``.

In your ``conftest.py``::

    pytest_plugins = ["actorstream.testing.pytest_plugin"]

Fixtures (docs/testing.md):

- ``actorstream_redis``: a fresh ``RedisServer`` on a free port for the test (kill it, pause it,
  restart it); ``actorstream_redis_url`` is its URL.
- ``actorstream_harness``: a factory, ``actorstream_harness(system)`` -> a ``Harness`` on that
  server. In a trio test: ``async with actorstream_harness(system) as h: ...``; in a plain test:
  ``actorstream_harness(system).run(scenario)`` with ``async def scenario(h): ...``.

Opt-in (not an entry point) on purpose: an entry-point plugin would import actorstream, trio and
hiredis into every pytest run of every project in the environment, and put these fixture names
into test suites that never asked for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .._servers.server import RedisServer
from .._testkit.harness import Harness

__all__ = ["actorstream_harness", "actorstream_redis", "actorstream_redis_url"]


@pytest.fixture
def actorstream_redis() -> Iterator[RedisServer]:
    """A fresh redis-server for this test, on a free port, removed after it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def actorstream_redis_url(actorstream_redis: RedisServer) -> str:
    return actorstream_redis.url


@pytest.fixture
def actorstream_harness(actorstream_redis: RedisServer) -> Callable[..., Harness]:
    """``actorstream_harness(system, **options)``: a Harness on this test's Redis."""

    def make(system: Any, **options: Any) -> Harness:
        return Harness(system, redis_url=actorstream_redis.url, **options)

    return make
