"""Error classification: which failures mean "Redis is unavailable, wait".

``redis.exceptions`` are plain exception classes (the ones users already catch); referencing
them keeps the core free of sockets and of the transport.
"""

from __future__ import annotations

from redis import exceptions as rex

__all__ = ["TRANSIENT_REDIS_ERRORS"]

#: Redis is unreachable, loading, out of memory or read-only: wait with backoff, not a crash.
TRANSIENT_REDIS_ERRORS = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.BusyLoadingError,
    rex.OutOfMemoryError,
    rex.ReadOnlyError,
    rex.TryAgainError,
    rex.ClusterDownError,  # a Cluster failing over or resharding (after the transport's retries)
    rex.MasterDownError,
)

