"""The pure fence and error classification of the core (no trio, no Redis)."""

from __future__ import annotations

import pytest
from redis import exceptions as rex

from actorstream import SelfFenced
from actorstream._core.classify import TRANSIENT_REDIS_ERRORS
from actorstream._core.crashes import describe_error
from actorstream._core.fence import Fence


def test_fence_allows_before_the_deadline_and_refuses_from_it() -> None:
    fence = Fence(epoch=3, deadline=10.0)
    fence.check(9.999)
    with pytest.raises(SelfFenced, match="epoch 3"):
        fence.check(10.0)
    fence.deadline = 20.0  # a confirmed renewal moves the deadline
    fence.check(15.0)


def test_revoked_fence_refuses_at_any_time() -> None:
    fence = Fence(epoch=1, deadline=100.0)
    fence.revoke()
    with pytest.raises(SelfFenced):
        fence.check(-1e9)


def test_transient_errors_are_redis_unavailability_only() -> None:
    assert issubclass(rex.ReadOnlyError, TRANSIENT_REDIS_ERRORS)
    assert issubclass(rex.OutOfMemoryError, TRANSIENT_REDIS_ERRORS)
    assert not issubclass(rex.ResponseError, TRANSIENT_REDIS_ERRORS)
    assert not issubclass(ValueError, TRANSIENT_REDIS_ERRORS)


def test_describe_error_is_one_bounded_line() -> None:
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    long = describe_error(RuntimeError("x" * 1000))
    assert len(long) == 300 and long.endswith("...")
