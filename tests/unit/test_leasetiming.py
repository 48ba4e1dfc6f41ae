"""Lease timing: validation with precise messages, and the self-fence arithmetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorstream._core.errors import ConfigError
from actorstream._core.leasetiming import Lease, LeaseTiming


def test_defaults_are_valid_and_documented() -> None:
    t = LeaseTiming()
    assert (t.ttl, t.renew_interval, t.heartbeat_interval, t.member_timeout) == (6, 2, 1, 6)
    assert t.self_fence_margin == 1.0
    assert t.trusted_for == 5.0
    assert t.t_own() == 8.0
    assert t.t_own(max_backoff=2.5) == 10.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, r"LeaseTiming\.ttl must be a positive, finite number of seconds, got 0"),
        ({"renew_interval": -1}, r"LeaseTiming\.renew_interval must be a positive"),
        ({"heartbeat_interval": math.nan}, r"LeaseTiming\.heartbeat_interval must be a positive"),
        ({"member_timeout": math.inf}, r"LeaseTiming\.member_timeout must be a positive"),
        ({"self_fence_margin": 0.0}, r"LeaseTiming\.self_fence_margin must be a positive"),
        ({"ttl": "6"}, r"LeaseTiming\.ttl must be a number of seconds, got '6'"),
        ({"ttl": True}, r"LeaseTiming\.ttl must be a number of seconds, got True"),
        (
            {"ttl": 6, "renew_interval": 2.5},
            r"renew_interval \(2\.5s\) must be at most ttl/3 \(2s, ttl=6s\)",
        ),
        (
            {"ttl": 9, "renew_interval": 3, "self_fence_margin": 6},
            r"self_fence_margin \(6s\) must be less than ttl - renew_interval \(6s\)",
        ),
        (
            {"heartbeat_interval": 2.5},
            r"heartbeat_interval \(2\.5s\) must be at most member_timeout/3 \(2s, "
            r"member_timeout=6s\)",
        ),
    ],
)
def test_bad_timings_rejected_precisely(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LeaseTiming(**kwargs)  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="ttl/3"):
        LeaseTiming(ttl=3.0)


def test_t_own_rejects_negative_backoff() -> None:
    with pytest.raises(ConfigError, match="max_backoff"):
        LeaseTiming().t_own(-1.0)


def test_timings_are_frozen() -> None:
    t = LeaseTiming()
    with pytest.raises(AttributeError):
        t.ttl = 1.0  # type: ignore[misc]


seconds = st.floats(min_value=0.001, max_value=1000, allow_nan=False)


@given(seconds, seconds, seconds, seconds, seconds)
def test_validation_accepts_exactly_the_safe_region(
    ttl: float, renew: float, heartbeat: float, member_timeout: float, margin: float
) -> None:
    ok = renew * 3 <= ttl and margin < ttl - renew and heartbeat * 3 <= member_timeout
    try:
        timing = LeaseTiming(ttl, renew, heartbeat, member_timeout, margin)
    except ConfigError:
        assert not ok
        return
    assert ok
    # A valid timing always leaves room to renew before trust runs out.
    lease = Lease(epoch=1, acquired_at=0.0, timing=timing)
    assert lease.renew_due_at < lease.self_fence_deadline < timing.ttl


def test_lease_deadlines() -> None:
    lease = Lease(epoch=7, acquired_at=100.0)
    assert lease.confirmed_at == 100.0
    assert lease.self_fence_deadline == 105.0
    assert lease.renew_due_at == 102.0
    assert not lease.renew_due(101.999)
    assert lease.renew_due(102.0)
    assert not lease.must_self_fence(104.999)
    assert lease.must_self_fence(105.0)
    assert lease.remaining(104.0) == 1.0


def test_renewal_counts_from_its_send_time_and_never_goes_back() -> None:
    lease = Lease(epoch=7, acquired_at=100.0).renewed(sent_at=102.0)
    assert lease.acquired_at == 100.0 and lease.epoch == 7
    assert lease.self_fence_deadline == 107.0
    # A late confirmation of an older renewal does not shorten the lease.
    assert lease.renewed(sent_at=101.0) == lease


@given(
    st.floats(0, 1e6, allow_nan=False),
    st.lists(st.floats(0, 1.9, allow_nan=False), max_size=20),
    st.floats(0, 100, allow_nan=False),
)
def test_trust_never_outlives_the_redis_lease(
    acquired_at: float, renew_gaps: list[float], pause: float
) -> None:
    """Redis starts its PX countdown no earlier than the send time, so whenever the worker
    still trusts its lease (after any renewals and any pause), Redis has not expired it."""
    timing = LeaseTiming()
    lease = Lease(epoch=1, acquired_at=acquired_at, timing=timing)
    redis_expiry = acquired_at + timing.ttl
    sent = acquired_at
    for gap in renew_gaps:
        sent += gap
        lease = lease.renewed(sent)
        redis_expiry = sent + timing.ttl
    now = sent + pause
    if not lease.must_self_fence(now):
        assert now < redis_expiry - timing.self_fence_margin + 1e-9
