"""The pure restart policy: validation, intensity window, backoff."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorstream._core.errors import ConfigError
from actorstream._core.policy import Backoff, RestartIntensity, RestartPolicy


def test_defaults() -> None:
    p = RestartPolicy()
    assert (p.max_restarts, p.within, p.backoff_initial, p.backoff_max) == (10, 60.0, 0.05, 5.0)
    assert (p.backoff_multiplier, p.jitter, p.reset_after) == (2.0, 0.25, 30.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_restarts": -1}, "RestartPolicy.max_restarts must be an int >= 0, got -1"),
        ({"max_restarts": 1.5}, "RestartPolicy.max_restarts must be an int, got 1.5"),
        ({"max_restarts": True}, "RestartPolicy.max_restarts must be a number, got True"),
        ({"within": 0}, "RestartPolicy.within must be a finite number > 0, got 0"),
        ({"within": -1.0}, "RestartPolicy.within must be a finite number > 0"),
        ({"within": math.inf}, "RestartPolicy.within must be a finite number > 0, got inf"),
        ({"within": math.nan}, "RestartPolicy.within must be a finite number > 0, got nan"),
        ({"within": "60"}, "RestartPolicy.within must be a number, got '60'"),
        ({"backoff_initial": -0.1}, "RestartPolicy.backoff_initial must be a finite number >= 0"),
        ({"backoff_max": -1}, "RestartPolicy.backoff_max must be a finite number >= 0"),
        (
            {"backoff_multiplier": 0.5},
            "RestartPolicy.backoff_multiplier must be a finite number >= 1",
        ),
        ({"jitter": 1.5}, "RestartPolicy.jitter must be in [0, 1], got 1.5"),
        ({"jitter": -0.1}, "RestartPolicy.jitter must be in [0, 1], got -0.1"),
        ({"reset_after": -1}, "RestartPolicy.reset_after must be a number >= 0, got -1"),
        (
            {"backoff_initial": 2.0, "backoff_max": 1.0},
            "RestartPolicy.backoff_max (1.0) must be >= backoff_initial (2.0)",
        ),
    ],
)
def test_bad_config_is_rejected_precisely(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RestartPolicy(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # ConfigError is also a ValueError


def test_edge_values_are_accepted() -> None:
    RestartPolicy(max_restarts=0, backoff_initial=0, backoff_max=0, jitter=0, reset_after=0)
    RestartPolicy(jitter=1, backoff_multiplier=1, reset_after=math.inf)


# ---- intensity ---------------------------------------------------------------------------------


def test_intensity_erlang_window() -> None:
    i = RestartIntensity(max_restarts=2, within=10.0)
    assert i.record_restart(0.0)
    assert i.record_restart(1.0)
    assert not i.record_restart(2.0)  # a third within 10s: escalate
    assert i.restarts_in_window(2.0) == 2  # the refused one is not recorded
    assert i.restarts_in_window(9.9) == 2
    assert i.restarts_in_window(10.0) == 1  # the one at 0.0 left the window
    assert i.record_restart(10.0)
    assert not i.record_restart(10.5)


def test_intensity_zero_escalates_at_once() -> None:
    assert not RestartIntensity(max_restarts=0, within=1.0).record_restart(0.0)


def test_from_policy() -> None:
    i = RestartIntensity.from_policy(RestartPolicy(max_restarts=3, within=7.0))
    assert (i.max_restarts, i.within) == (3, 7.0)


times = st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=60).map(sorted)


@given(
    max_restarts=st.integers(min_value=0, max_value=8),
    within=st.floats(min_value=0.01, max_value=100),
    crashes=times,
)
def test_intensity_never_allows_more_than_max_in_any_window(
    max_restarts: int, within: float, crashes: list[float]
) -> None:
    intensity = RestartIntensity(max_restarts, within)
    accepted = [t for t in crashes if intensity.record_restart(t)]
    for t in accepted:  # every window (t - within, t] ending at an accepted restart
        assert sum(1 for u in accepted if u <= t and t - u < within) <= max_restarts
    # and a refusal happens only when the window is really full
    intensity2 = RestartIntensity(max_restarts, within)
    for t in crashes:
        before = intensity2.restarts_in_window(t)
        assert intensity2.record_restart(t) == (before < max_restarts)


@given(
    max_restarts=st.integers(min_value=1, max_value=8),
    within=st.floats(min_value=0.01, max_value=100),
    start=st.floats(min_value=0, max_value=1000),
)
def test_window_sliding_frees_capacity(max_restarts: int, within: float, start: float) -> None:
    intensity = RestartIntensity(max_restarts, within)
    for _ in range(max_restarts):
        assert intensity.record_restart(start)
    assert not intensity.record_restart(start)
    later = start + within * 1.000001  # just past the window (float-safe)
    assert intensity.restarts_in_window(later) == 0
    assert intensity.record_restart(later)


# ---- backoff -----------------------------------------------------------------------------------


def test_backoff_exponential_capped_without_jitter() -> None:
    b = Backoff(RestartPolicy(backoff_initial=0.1, backoff_max=1.0, jitter=0, reset_after=100))
    assert b.current == 0.0
    b.on_start(0.0)
    delays = [b.next_delay(1.0) for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.current == pytest.approx(1.0)
    b.reset()
    assert b.current == 0.0
    assert b.next_delay(2.0) == pytest.approx(0.1)


def test_backoff_reset_after_long_run() -> None:
    b = Backoff(RestartPolicy(backoff_initial=1.0, backoff_max=8.0, jitter=0, reset_after=30))
    b.on_start(0.0)
    assert b.next_delay(1.0) == 1.0
    b.on_start(2.0)
    assert b.next_delay(3.0) == 2.0  # ran 1s: keeps growing
    b.on_start(5.0)
    assert b.next_delay(34.9) == 4.0  # ran 29.9s
    b.on_start(40.0)
    assert b.next_delay(70.0) == 1.0  # ran exactly reset_after: starts over


def test_backoff_jitter_uses_rng_and_stays_in_band() -> None:
    policy = RestartPolicy(backoff_initial=1.0, backoff_max=1.0, jitter=0.5)
    a = [Backoff(policy).next_delay(0.0, random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]  # deterministic with a seeded rng
    spread = {Backoff(policy).next_delay(0.0, random.Random(s)) for s in range(50)}
    assert len(spread) > 1
    assert all(0.5 <= d <= 1.5 for d in spread)


policies = st.builds(
    lambda initial, extra, mult, jitter: RestartPolicy(
        backoff_initial=initial, backoff_max=initial + extra, backoff_multiplier=mult, jitter=jitter
    ),
    st.floats(min_value=0, max_value=10),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=1, max_value=10),
    st.floats(min_value=0, max_value=1),
)


@given(policy=policies, seed=st.integers(), n=st.integers(min_value=1, max_value=80))
def test_delays_always_within_bounds(policy: RestartPolicy, seed: int, n: int) -> None:
    b = Backoff(policy)
    rng = random.Random(seed)
    for i in range(n):
        d = b.next_delay(float(i), rng)
        assert 0.0 <= d <= policy.backoff_max * (1 + policy.jitter) + 1e-9
        assert b.current == d


@given(policy=policies, n=st.integers(min_value=1, max_value=80))
def test_delays_monotone_without_jitter_until_cap(policy: RestartPolicy, n: int) -> None:
    policy = RestartPolicy(
        backoff_initial=policy.backoff_initial,
        backoff_max=policy.backoff_max,
        backoff_multiplier=policy.backoff_multiplier,
        jitter=0,
        reset_after=math.inf,
    )
    b = Backoff(policy)
    b.on_start(0.0)
    delays = [b.next_delay(float(i)) for i in range(n)]
    assert delays[0] == policy.backoff_initial
    for prev, cur in itertools.pairwise(delays):
        assert cur >= prev
        assert cur == min(prev * policy.backoff_multiplier, policy.backoff_max)
    assert max(delays) <= policy.backoff_max
