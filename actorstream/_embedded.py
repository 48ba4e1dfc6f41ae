"""An embedded redis-server for ``actorstream demo``: from PATH, else the ``embedded`` extra.

A throwaway server on a free port, with a temporary directory and no persistence; it is killed
and its directory removed on exit (also at interpreter exit if something goes wrong).
"""

from __future__ import annotations

from typing import Self

from ._servers.process import Managed, find_redis_server
from ._servers.server import RedisServer

__all__ = ["EmbeddedRedis", "find_redis_server"]


class EmbeddedRedis(Managed):
    """``with EmbeddedRedis() as redis:`` a private redis-server for the block."""

    def __init__(self) -> None:
        self._server: RedisServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded redis-server is not running")
        return self._server.url

    @property
    def binary(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded redis-server is not running")
        return self._server.binary

    def start(self) -> Self:
        """Start it; ``RuntimeError`` (saying how to install one) if there is no binary."""
        server = RedisServer()
        server.start()
        self._server = server
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
