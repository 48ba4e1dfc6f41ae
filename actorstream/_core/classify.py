"""Error classification: which failures mean "Redis is unavailable, wait" and how errors read.

``redis.exceptions`` are plain exception classes (the ones users already catch); referencing
them keeps the core free of sockets and of the transport.
"""

from __future__ import annotations

from redis import exceptions as rex

__all__ = ["TRANSIENT_REDIS_ERRORS", "describe_error"]

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


def describe_error(exc: BaseException) -> str:
    """One line, at most 300 characters, for statistics, `top` and reports."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
