"""The pure failure-containment rules (actorstream/_core/failures.py), without trio or Redis.

Besides examples of each rule, a small simulator drives ``PartitionFailures`` the way the
partition actors do (strict order per partition, a virtual clock, one attempt at a time) and
Hypothesis checks the promises of docs/dead-letters.md on random workloads: an outage costs at
most one dead letter per partition and never spins; a poison event preceded by a healthy one is
dead-lettered exactly once, after exactly ``max_deliveries`` deliveries; healthy events never are.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorstream._core.crashes import (
    CrashLogLimit,
    LogAction,
    describe_error,
    format_bounded_traceback,
)
from actorstream._core.errors import ConfigError
from actorstream._core.failures import (
    Action,
    Classification,
    ContainmentPolicy,
    ErrorClass,
    HealthBoard,
    PartitionFailures,
    RestartBudget,
    error_types,
)

# -- classification ----------------------------------------------------------------------------


class Fatal(Exception):
    pass


class SubFatal(Fatal):
    pass


def test_classification_names_types_and_the_most_specific_wins() -> None:
    c = Classification(poison=(ValueError, Fatal), transient=(UnicodeDecodeError, ConnectionError))
    assert c.classify(ValueError("x")) is ErrorClass.POISON
    assert c.classify(SubFatal()) is ErrorClass.POISON
    assert c.classify(UnicodeDecodeError("utf-8", b"", 0, 1, "bad")) is ErrorClass.TRANSIENT
    assert c.classify(ConnectionResetError()) is ErrorClass.TRANSIENT
    assert c.classify(KeyError("k")) is ErrorClass.UNCLASSIFIED
    assert Classification().classify(ValueError()) is ErrorClass.UNCLASSIFIED


def test_classification_accepts_one_type_and_drops_duplicates() -> None:
    c = Classification(poison=ValueError, transient=[OSError, OSError])
    assert c.poison == (ValueError,)
    assert c.transient == (OSError,)


def test_exception_groups_are_classified_by_agreeing_leaves() -> None:
    c = Classification(poison=(ValueError,), transient=(ConnectionError,))
    poison = ExceptionGroup("g", [ValueError(), ExceptionGroup("h", [ValueError()])])
    mixed = ExceptionGroup("g", [ValueError(), ConnectionError()])
    assert c.classify(poison) is ErrorClass.POISON
    assert c.classify(mixed) is ErrorClass.UNCLASSIFIED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poison": "ValueError"}, "poison_errors must be an exception type or a tuple"),
        ({"poison": 3}, "poison_errors must be an exception type or a tuple"),
        ({"transient": (ValueError, 1)}, "transient_errors: 1 is not an exception type"),
        ({"transient": (int,)}, "transient_errors: <class 'int'> is not an exception type"),
        ({"poison": (KeyboardInterrupt,)}, "KeyboardInterrupt is not a subclass of Exception"),
        ({"poison": (ValueError,), "transient": (ValueError,)}, "ValueError named in both"),
    ],
)
def test_classification_rejects_bad_settings_precisely(kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Classification(**kwargs)


def test_error_types_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^my_setting"):
        error_types(None, setting="my_setting")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_deliveries": 0}, "ContainmentPolicy.max_deliveries must be an int >= 1, got 0"),
        ({"max_deliveries": 2.0}, "ContainmentPolicy.max_deliveries must be an int"),
        ({"backoff_max": math.inf}, "ContainmentPolicy.backoff_max must be a finite number > 0"),
        ({"backoff_max": True}, "ContainmentPolicy.backoff_max must be a number, got True"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "backoff_max (1.0) must be >= backoff"),
        ({"jitter": 1.0}, "ContainmentPolicy.jitter must be in [0, 1), got 1.0"),
        ({"multiplier": 0.5}, "ContainmentPolicy.multiplier must be a finite number >= 1"),
    ],
)
def test_policy_rejects_bad_settings_precisely(kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ContainmentPolicy(**kwargs)


# -- the rule, by example ----------------------------------------------------------------------

POLICY = ContainmentPolicy(max_deliveries=3, backoff_initial=0.1, backoff_max=30.0, jitter=0.0)


def partition(
    p: int = 0, board: HealthBoard | None = None, policy: ContainmentPolicy = POLICY
) -> PartitionFailures:
    return PartitionFailures(policy, board or HealthBoard(), p, random.Random(0))


def test_a_poison_event_is_redelivered_at_once_then_dead_lettered() -> None:
    pf = partition()
    first = pf.on_failure("e1", 1)
    second = pf.on_failure("e1", 2)
    third = pf.on_failure("e1", 3)
    assert (first.action, first.delay, first.reason) == (Action.REDELIVER, 0.0, "poison-suspect")
    assert second.action is Action.REDELIVER
    assert (third.action, third.reason) == (Action.DEAD_LETTER, "max-deliveries")
    assert pf.state == "running"


def test_a_dead_letter_counts_as_progress_but_the_streak_stays() -> None:
    pf = partition()
    for d in (1, 2, 3):
        pf.on_failure("e1", d)
    pf.on_dead_letter()
    decision = pf.on_failure("e2", 1)  # a second distinct event, nothing succeeded since
    assert (decision.action, decision.reason) == (Action.BACK_OFF, "outage")
    assert pf.streak == 2 and pf.state == "backing-off"
    pf.on_success()
    assert pf.streak == 0 and pf.state == "running"
    assert pf.on_failure("e3", 1).action is Action.REDELIVER  # a new streak: poison presumed


def test_outage_backoff_grows_to_the_cap_and_spends_no_delivery() -> None:
    pf = partition(policy=attrs.evolve(POLICY, backoff_max=1.0))
    pf.on_failure("e1", 1)
    pf.on_failure("e1", 2)
    pf.on_failure("e1", 3)
    pf.on_dead_letter()
    delays = [pf.on_failure("e2", 1).delay for _ in range(8)]  # deliveries never grow
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(pf.on_failure("e2", 1).action is Action.BACK_OFF for _ in range(100))


def test_another_partition_failing_means_outage_even_at_the_first_event() -> None:
    board = HealthBoard()
    p0, p1 = partition(0, board), partition(1, board)
    assert p0.on_failure("a", 1).action is Action.REDELIVER
    assert p1.on_failure("b", 1).reason == "outage"  # zero dead letters is the aim
    assert p0.on_failure("a", 2).reason == "outage"
    assert p0.on_failure("a", 3).reason == "outage"  # at its last delivery: kept, not moved


def test_siblings_succeeding_make_a_poison_run_drain() -> None:
    board = HealthBoard()
    pf = partition(0, board)
    for d in (1, 2, 3):
        pf.on_failure("p1", d)
    pf.on_dead_letter()
    assert pf.on_failure("p2", 1).reason == "outage"  # no evidence yet: wait
    board.record_successes(5)  # partition 1 handles events meanwhile
    assert pf.retry_early()
    assert pf.on_failure("p2", 1).reason == "poison-suspect"
    assert pf.on_failure("p2", 2).action is Action.REDELIVER
    assert pf.on_failure("p2", 3).action is Action.DEAD_LETTER


def test_evidence_of_health_is_void_once_another_partition_fails() -> None:
    board = HealthBoard()
    p0, p1 = partition(0, board), partition(1, board)
    p0.on_failure("a", 1)
    board.record_successes(1)  # a success, then partition 1 fails: the outage began
    assert p1.on_failure("b", 1).action is Action.REDELIVER
    assert not p0.others_healthy()
    assert p0.on_failure("a", 2).reason == "outage"
    assert not p0.retry_early()


def test_a_dead_lettered_event_is_no_evidence_of_an_outage() -> None:
    board = HealthBoard()
    p0, p1 = partition(0, board), partition(1, board)
    for d in (1, 2, 3):
        p0.on_failure("a", d)
    p0.on_dead_letter()
    assert not board.failing_elsewhere(1)
    assert p1.on_failure("b", 1).action is Action.REDELIVER
    board.forget(1)
    assert not board.failing_elsewhere(0)


def test_classified_types_override_the_streak_rule() -> None:
    pf = partition()
    assert pf.on_failure("e1", 1, ErrorClass.POISON).reason == "poison-type"
    pf.on_dead_letter()
    assert pf.on_failure("e2", 1, ErrorClass.POISON).action is Action.DEAD_LETTER  # a run drains
    pf.on_dead_letter()
    pf.on_success()
    transient = [pf.on_failure("e3", d, ErrorClass.TRANSIENT) for d in (1, 5, 50)]
    assert [d.action for d in transient] == [Action.BACK_OFF] * 3  # never dead-lettered
    assert {d.reason for d in transient} == {"transient-type"}


def test_an_outage_that_starts_mid_batch() -> None:
    """Events 0-4 succeed, then everything fails: event 5 is poison-suspect, 6 waits."""
    board = HealthBoard()
    pf = partition(0, board)
    for _ in range(5):
        board.record_successes(1)
        pf.on_success()
    decisions = [pf.on_failure(5, d) for d in (1, 2, 3)]
    assert [d.action for d in decisions] == [Action.REDELIVER, Action.REDELIVER, Action.DEAD_LETTER]
    pf.on_dead_letter()
    assert pf.on_failure(6, 1).reason == "outage"


def test_jitter_stays_within_bounds() -> None:
    pf = partition(policy=attrs.evolve(POLICY, jitter=0.5, backoff_max=2.0))
    pf.on_failure("x", 1, ErrorClass.TRANSIENT)
    delays = [pf.on_failure("x", 1, ErrorClass.TRANSIENT).delay for _ in range(200)]
    assert all(0.1 <= d <= 2.0 for d in delays)
    assert len(set(delays)) > 10


# -- restarts and logs -------------------------------------------------------------------------


def test_restart_budget_backs_off_instead_of_giving_up() -> None:
    budget = RestartBudget(
        max_restarts=3, within=60.0, initial=0.05, restart_max=0.2, backoff_max=1.0, jitter=0.0
    )
    decisions = [budget.on_crash(float(t)) for t in range(8)]
    assert [d.delay for d in decisions] == [0.05, 0.1, 0.2, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert [d.backing_off for d in decisions] == [False] * 3 + [True] * 5
    budget.on_progress()  # a dead letter or a handled event
    assert budget.on_crash(9.0) == budget.on_crash(9.0).__class__(0.05, False)


def test_restart_budget_window_slides() -> None:
    budget = RestartBudget(max_restarts=2, within=10.0, jitter=0.0)
    budget.on_crash(0.0)
    budget.on_crash(1.0)
    assert budget.on_crash(2.0).backing_off
    assert budget.restarts_in_window(11.5) == 1
    assert not budget.on_crash(12.0).backing_off


def test_crash_logs_first_in_full_then_a_count() -> None:
    limit = CrashLogLimit(interval=10.0)
    assert limit.on_failure("ValueError", 0.0) is LogAction.FULL
    assert limit.on_failure("ValueError", 1.0) is LogAction.QUIET
    assert limit.on_failure("ValueError", 5.0) is LogAction.QUIET
    assert limit.on_failure("ValueError", 10.0) is LogAction.COUNT
    assert limit.take_count(10.0) == 3
    assert limit.on_failure("ValueError", 11.0) is LogAction.QUIET
    assert limit.on_failure("KeyError", 12.0) is LogAction.FULL  # a new type: in full
    assert limit.on_failure("ValueError", 30.0) is LogAction.FULL  # quiet for long: in full
    actions = [limit.on_failure("ValueError", 30.0 + i / 100) for i in range(1, 1000)]
    assert actions.count(LogAction.FULL) == 0 and actions.count(LogAction.COUNT) <= 1


# -- what users read ---------------------------------------------------------------------------


def _raise_deep(n: int) -> None:
    if n == 0:
        raise ValueError("order 42 has no customer")
    _raise_deep(n - 1)


def _caught(fn: Any, *args: Any) -> Exception:
    try:
        fn(*args)
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def test_bounded_traceback_names_type_message_file_and_line() -> None:
    exc = _caught(_raise_deep, 30)
    text = format_bounded_traceback(exc, frames=5)
    lines = text.splitlines()
    assert lines[-1] == "ValueError: order 42 has no customer"
    assert "earlier frames omitted" in lines[0]
    assert text.count('File "') == 5
    assert re.search(r'test_failures\.py", line \d+, in _raise_deep', text)
    assert 'raise ValueError("order 42 has no customer")' in text


def test_bounded_traceback_keeps_the_last_line_under_its_limit() -> None:
    exc = _caught(_raise_deep, 50)
    text = format_bounded_traceback(exc, frames=50, limit=600)
    assert len(text) <= 600
    assert text.startswith("...\n")
    assert text.endswith("ValueError: order 42 has no customer")


def test_bounded_traceback_of_chains_groups_and_unraised_errors() -> None:
    def chained() -> None:
        try:
            _raise_deep(1)
        except ValueError as exc:
            raise RuntimeError("billing failed") from exc

    text = format_bounded_traceback(_caught(chained))
    assert "ValueError: order 42 has no customer" in text
    assert "direct cause" in text
    assert text.endswith("RuntimeError: billing failed")

    def group() -> None:
        raise ExceptionGroup("two", [_caught(_raise_deep, 0), KeyError("k")])

    text = format_bounded_traceback(_caught(group))
    assert "sub-exception 1 of 2" in text and "KeyError: 'k'" in text
    assert text.splitlines()[-1] == "ExceptionGroup: two (2 sub-exceptions)"
    assert format_bounded_traceback(ValueError("never raised")) == "ValueError: never raised"


def test_describe_error_is_one_bounded_line() -> None:
    assert describe_error(ValueError("a\nb   c")) == "ValueError: a b c"
    assert describe_error(KeyError()) == "KeyError"
    assert len(describe_error(ValueError("x" * 1000))) == 300


# -- the rule on random workloads (Hypothesis) -------------------------------------------------

TICK = 0.001  # one handling attempt or Redis round trip, in simulated seconds


@attrs.define
class Outcome:
    dead: list[tuple[int, int, int]] = attrs.Factory(list)  # (partition, index, deliveries)
    handled: dict[int, list[int]] = attrs.Factory(dict)
    attempts: dict[int, list[float]] = attrs.Factory(dict)  # times of attempts per partition
    end: float = 0.0


def simulate(
    events: list[list[bool]],
    *,
    policy: ContainmentPolicy = POLICY,
    outage: tuple[float, float] = (math.inf, math.inf),
    classify: ErrorClass = ErrorClass.UNCLASSIFIED,
    live_until: float = 0.0,
    horizon: float = 600.0,
    seed: int = 0,
) -> Outcome:
    """Partitions handle their events strictly in order; ``True`` marks a poison event.

    Every attempt fails inside ``outage``; a partition of its own (the last one) keeps handling
    healthy live traffic until ``live_until``, like sibling partitions under load.
    """
    board = HealthBoard()
    rng = random.Random(seed)
    parts = [
        PartitionFailures(policy, board, p, random.Random(seed + p)) for p in range(len(events))
    ]
    index = [0] * len(events)
    deliveries = [1] * len(events)
    ready = [rng.random() * TICK for _ in events]
    out = Outcome(handled={p: [] for p in range(len(events))},
                  attempts={p: [] for p in range(len(events))})
    live_ready = 0.0
    now = 0.0
    while now < horizon:
        todo = [p for p in range(len(events)) if index[p] < len(events[p])]
        if not todo:
            break
        p = min(todo, key=lambda q: ready[q])
        if live_ready < live_until and live_ready <= ready[p]:
            now = max(now, live_ready)
            live_ready = now + TICK
            if not outage[0] <= now < outage[1]:
                board.record_successes(1)
            continue
        now = max(now, ready[p])
        out.attempts[p].append(now)
        i = index[p]
        fails = events[p][i] or outage[0] <= now < outage[1]
        if not fails:
            board.record_successes(1)
            parts[p].on_success()
            out.handled[p].append(i)
            index[p] += 1
            deliveries[p] = 1
            ready[p] = now + TICK
            for q in range(len(events)):  # others recovered: backing-off partitions wake up
                if q != p and parts[q].retry_early():
                    ready[q] = min(ready[q], now + TICK)
            continue
        decision = parts[p].on_failure((p, i), deliveries[p], classify)
        if decision.action is Action.DEAD_LETTER:
            out.dead.append((p, i, deliveries[p]))
            parts[p].on_dead_letter()
            index[p] += 1
            deliveries[p] = 1
            ready[p] = now + TICK
        elif decision.action is Action.REDELIVER:
            deliveries[p] += 1
            ready[p] = now + TICK + decision.delay
        else:
            assert decision.delay >= policy.backoff_initial * (1 - policy.jitter)
            ready[p] = now + TICK + decision.delay
    out.end = now
    return out


def max_attempts(seconds: float, policy: ContainmentPolicy) -> float:
    """Attempts a partition may make in ``seconds`` of failures without spinning: its
    deliveries, the backoff's climb to the cap, then one per (jittered) cap."""
    climb = math.ceil(math.log(policy.backoff_max / policy.backoff_initial, policy.multiplier)) + 1
    return policy.max_deliveries + climb + seconds / (policy.backoff_max * (1 - policy.jitter)) + 2


healthy_partitions = st.lists(
    st.lists(st.just(False), min_size=1, max_size=30), min_size=1, max_size=8
)


@settings(max_examples=150, deadline=None)
@given(
    events=healthy_partitions,
    start=st.floats(0.0, 0.05),
    length=st.floats(0.5, 120.0),
    seed=st.integers(0, 1000),
)
def test_an_outage_costs_at_most_one_dead_letter_per_partition(
    events: list[list[bool]], start: float, length: float, seed: int
) -> None:
    policy = attrs.evolve(POLICY, jitter=0.1, backoff_max=5.0)
    out = simulate(events, policy=policy, outage=(start, start + length), seed=seed,
                   horizon=start + length + 600)
    per_partition = [sum(1 for p, _, _ in out.dead if p == q) for q in range(len(events))]
    assert max(per_partition) <= 1, out.dead
    for p, evs in enumerate(events):  # every event handled or dead-lettered, in order
        dead = {i for q, i, _ in out.dead if q == p}
        assert sorted(out.handled[p] + sorted(dead)) == list(range(len(evs)))
        assert out.handled[p] == sorted(out.handled[p])
        during = [t for t in out.attempts[p] if start <= t < start + length]
        assert len(during) <= max_attempts(length, policy), (p, len(during))


def poison_partition(draw: Any) -> list[bool]:
    """Healthy and poison events, every poison event right after a healthy one."""
    n = draw(st.integers(1, 40))
    out: list[bool] = []
    for _ in range(n):
        out.append(False)
        if draw(st.booleans()):
            out.append(True)
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), others=healthy_partitions, seed=st.integers(0, 1000))
def test_interleaved_poison_is_dead_lettered_once_after_max_deliveries(
    data: st.DataObject, others: list[list[bool]], seed: int
) -> None:
    poisoned = poison_partition(data.draw)
    events = [poisoned, *others]
    out = simulate(events, seed=seed)
    assert sorted((p, i) for p, i, _ in out.dead) == [
        (0, i) for i, bad in enumerate(poisoned) if bad
    ]
    assert {d for _, _, d in out.dead} <= {POLICY.max_deliveries}
    assert out.handled[0] == [i for i, bad in enumerate(poisoned) if not bad]
    for p in range(1, len(events)):
        assert out.handled[p] == list(range(len(events[p])))


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.lists(st.booleans(), min_size=1, max_size=20), min_size=1, max_size=6
    ),
    seed=st.integers(0, 1000),
)
def test_with_healthy_siblings_every_poison_event_drains(
    events: list[list[bool]], seed: int
) -> None:
    """Runs of poison, in several partitions at once, while live traffic succeeds elsewhere."""
    out = simulate(events, live_until=math.inf, seed=seed, horizon=3600.0)
    assert sorted((p, i) for p, i, _ in out.dead) == sorted(
        (p, i) for p, evs in enumerate(events) for i, bad in enumerate(evs) if bad
    )
    assert {d for _, _, d in out.dead} <= {POLICY.max_deliveries}


@settings(max_examples=50, deadline=None)
@given(run=st.integers(2, 200), seed=st.integers(0, 1000))
def test_a_poison_run_never_spins_and_drains_at_once_when_classified(run: int, seed: int) -> None:
    policy = attrs.evolve(POLICY, backoff_max=5.0)
    waiting = simulate([[False] + [True] * run], policy=policy, horizon=300.0, seed=seed)
    # Nothing succeeds anywhere: the run looks like an outage, and waits without spinning.
    assert len(waiting.dead) == 1
    assert len(waiting.attempts[0]) <= max_attempts(300.0, policy)
    drained = simulate(
        [[False] + [True] * run], policy=policy, classify=ErrorClass.POISON, seed=seed
    )
    assert [i for _, i, _ in drained.dead] == list(range(1, run + 1))
    assert len(drained.attempts[0]) == run + 1  # one attempt each: full speed
    assert drained.end <= (run + 2) * TICK
