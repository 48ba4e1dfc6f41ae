"""Supervisor mechanics on a MockClock (autojump): restarts, strategies, escalation, stops."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from actorstream._core.errors import SupervisorGaveUp
from actorstream._core.policy import RestartPolicy
from actorstream._tree.supervisor import (
    ChildContext,
    ChildFn,
    ChildState,
    ChildStatistics,
    Restart,
    Strategy,
    Supervisor,
    SupervisorStatistics,
)

Clock = trio.testing.MockClock
# No jitter so that restart times are exact: delays 1, 2, 4, 4, ...
POLICY = RestartPolicy(
    max_restarts=100, within=60, backoff_initial=1.0, backoff_max=4.0, jitter=0, reset_after=1000
)


def recorder(
    log: list[tuple[str, int, float]], name: str, crash_runs: int = 0, run_for: float = 1.0
) -> Callable[[ChildContext], Awaitable[None]]:
    """A child that logs (name, restarts, time) at start, crashes its first ``crash_runs`` runs."""

    async def child(ctx: ChildContext) -> None:
        log.append((name, ctx.restarts, trio.current_time()))
        if ctx.restarts < crash_runs:
            await trio.sleep(run_for)
            raise ValueError(f"{name} crash {ctx.restarts}")
        await trio.sleep_forever()

    return child


def all_tasks() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, todo = 0, [root]
    while todo:
        task = todo.pop()
        count += 1
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return count


def names(log: list[tuple[str, int, float]]) -> list[str]:
    return [n for n, _, _ in log]


async def test_one_for_one_restarts_only_the_crashed_child(autojump_clock: Clock) -> None:
    log: list[tuple[str, int, float]] = []
    sup = Supervisor("s", policy=POLICY)
    sup.start_child("a", recorder(log, "a", crash_runs=2))
    sup.start_child("b", recorder(log, "b"))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(100)
        stats = sup.statistics()
        nursery.cancel_scope.cancel()
    # a: crash at 1 -> backoff 1 -> start at 2; crash at 3 -> backoff 2 -> start at 5
    assert log == [("a", 0, 0.0), ("b", 0, 0.0), ("a", 1, 2.0), ("a", 2, 5.0)]
    by_id = {c.child_id: c for c in stats.children}
    assert by_id["a"].restarts == 2 and by_id["b"].restarts == 0
    assert by_id["a"].last_error == "ValueError: a crash 1"
    assert by_id["b"].state is ChildState.RUNNING and by_id["b"].started_at == 0.0
    assert stats.total_restarts == 2


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, ["a", "b", "c", "b"]),
        (Strategy.ONE_FOR_ALL, ["a", "b", "c", "a", "b", "c"]),
        (Strategy.REST_FOR_ONE, ["a", "b", "c", "b", "c"]),
    ],
)
async def test_strategies_restart_sets_in_start_order(
    autojump_clock: Clock, strategy: Strategy, expected: list[str]
) -> None:
    log: list[tuple[str, int, float]] = []
    cancelled: list[str] = []

    def child(name: str, crash_runs: int) -> Callable[[ChildContext], Awaitable[None]]:
        inner = recorder(log, name, crash_runs)

        async def fn(ctx: ChildContext) -> None:
            try:
                await inner(ctx)
            except trio.Cancelled:
                cancelled.append(name)
                raise

        return fn

    sup = Supervisor("s", strategy=strategy, policy=POLICY)
    sup.start_child("a", child("a", 0))
    sup.start_child("b", child("b", 1))
    sup.start_child("c", child("c", 0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(50)
        stats = sup.statistics()
        nursery.cancel_scope.cancel()
    assert names(log) == expected
    restarted = expected[3:]
    assert sorted(cancelled[: len(restarted) - 1]) == sorted(set(restarted) - {"b"})
    assert {c.child_id: c.restarts for c in stats.children} == {
        n: (1 if n in restarted else 0) for n in "abc"
    }
    # the whole set restarted together, after b's backoff (crash at 1 + 1s)
    assert {t for n, r, t in log if r == 1} == {2.0}
    assert stats.total_restarts == 1


async def test_escalation_after_max_restarts_within_window(autojump_clock: Clock) -> None:
    policy = RestartPolicy(max_restarts=3, within=10, backoff_initial=0.5, jitter=0)
    sibling_cancelled = trio.Event()

    async def sibling(ctx: ChildContext) -> None:
        try:
            await trio.sleep_forever()
        finally:
            sibling_cancelled.set()

    sup = Supervisor("sup", policy=policy)
    sup.start_child("bad", recorder([], "bad", crash_runs=1000, run_for=0.1))
    sup.start_child("sibling", sibling)
    with trio.fail_after(100), pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    err = info.value
    assert (err.name, err.restarts, err.within) == ("sup", 3, 10)
    cause = err.__cause__
    assert isinstance(cause, ExceptionGroup)
    assert [str(e) for e in cause.exceptions] == [f"bad crash {i}" for i in range(4)]
    assert sibling_cancelled.is_set()  # no orphan
    stats = sup.statistics()
    assert stats.gave_up and not stats.running
    states = {c.child_id: c.state for c in stats.children}
    assert states == {"bad": ChildState.FAILED, "sibling": ChildState.STOPPED}


async def test_no_escalation_when_crashes_are_spread_wider_than_window(
    autojump_clock: Clock,
) -> None:
    policy = RestartPolicy(max_restarts=2, within=10, backoff_initial=0.5, jitter=0)
    log: list[tuple[str, int, float]] = []
    # runs 5.5s then crashes: crashes are >= 6s apart, so never 3 within 10s
    sup = Supervisor("sup", policy=policy)
    sup.start_child("slow", recorder(log, "slow", crash_runs=1000, run_for=5.5))
    with trio.move_on_after(200):
        await sup.run()
    assert len(log) > 15  # many more than max_restarts crashes, none escalated
    assert not sup.statistics().gave_up

    # the same crashes 2x as often do escalate
    sup2 = Supervisor("sup2", policy=policy)
    sup2.start_child("fast", recorder([], "fast", crash_runs=1000, run_for=2.0))
    with trio.fail_after(200), pytest.raises(SupervisorGaveUp):
        await sup2.run()
    assert sup2.statistics().gave_up


async def test_per_child_intensity_keeps_each_child_in_its_own_window(
    autojump_clock: Clock,
) -> None:
    """Three children each crashing 3 times in the window: 9 crashes together, 3 each.

    One shared intensity of 3 gives up; per-child intensity of 3 does not, because no single
    child exceeds its own (the partitions branch relies on this: one poison partition must
    not use up its siblings' restarts).
    """
    policy = RestartPolicy(max_restarts=3, within=100, backoff_initial=0.5, jitter=0)

    def three_crashes(log: list[tuple[str, int, float]], name: str) -> ChildFn:
        return recorder(log, name, crash_runs=3, run_for=0.1)

    shared = Supervisor("shared", policy=policy)
    for name in "abc":
        shared.start_child(name, three_crashes([], name))
    with pytest.raises(SupervisorGaveUp):
        await shared.run()

    log: list[tuple[str, int, float]] = []
    own = Supervisor("own", policy=policy, per_child_intensity=True)
    for name in "abc":
        own.start_child(name, three_crashes(log, name))
    with trio.move_on_after(50):
        await own.run()
    assert not own.statistics().gave_up
    assert sorted(names(log)) == sorted("abc" * 4)  # 3 crashes + the run that stays up
    assert own.statistics().total_restarts == 9


async def test_per_child_intensity_gives_up_naming_the_child(autojump_clock: Clock) -> None:
    policy = RestartPolicy(max_restarts=2, within=100, backoff_initial=0.5, jitter=0)
    sup = Supervisor("partitions", policy=policy, per_child_intensity=True)
    sup.start_child("ok", recorder([], "ok"))
    sup.start_child("bad", recorder([], "bad", crash_runs=1000, run_for=0.1))
    with pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    assert info.value.name == "partitions/bad"
    assert isinstance(info.value.__cause__, ExceptionGroup)
    assert [str(e) for e in info.value.__cause__.exceptions] == [
        f"bad crash {i}" for i in range(3)
    ]
    # run() again: every child starts afresh with a fresh window of its own.
    with pytest.raises(SupervisorGaveUp):
        await sup.run()


async def test_backoff_delays_and_visible_backoff_state(autojump_clock: Clock) -> None:
    policy = RestartPolicy(
        backoff_initial=1.0, backoff_max=4.0, jitter=0, reset_after=20, within=1, max_restarts=100
    )
    log: list[tuple[str, int, float]] = []
    long_run = trio.Event()

    async def child(ctx: ChildContext) -> None:
        log.append(("c", ctx.restarts, trio.current_time()))
        if ctx.restarts == 5:
            await trio.sleep(25)  # longer than reset_after: backoff starts over
        elif ctx.restarts > 5:
            long_run.set()
            await trio.sleep_forever()
        raise RuntimeError("x")

    sup = Supervisor("s", policy=policy)
    sup.start_child("c", child)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(3.5)  # crashed at 0 (backoff 1), 1 (backoff 2), 3 (backoff 4)
        (snap,) = sup.statistics().children
        assert snap.state is ChildState.BACKOFF
        assert snap.current_backoff == 4.0
        await long_run.wait()
        nursery.cancel_scope.cancel()
    starts = [t for _, _, t in log]
    # delays 1, 2, 4, 4, 4 (capped), then the 25s run resets: delay 1
    assert starts == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0, 41.0]


async def test_stop_child_graceful_within_grace(autojump_clock: Clock) -> None:
    seen: list[bool] = []

    async def polite(ctx: ChildContext) -> None:
        seen.append(ctx.stop_requested)
        await ctx.wait_stop_requested()
        seen.append(ctx.stop_requested)
        await trio.sleep(1)  # some cleanup, well within grace

    sup = Supervisor("s", policy=POLICY)
    sup.start_child("p", polite)
    sup.start_child("q", recorder([], "q"))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(3)
        await sup.stop_child("p", grace=5)
        assert trio.current_time() == 4.0
        assert seen == [False, True]
        assert sup.children() == ["q"]
        await trio.sleep(10)  # not restarted
        assert sup.children() == ["q"] and sup.statistics().total_restarts == 0
        await sup.stop_child("p")  # unknown / already stopped: no-op
        sup.start_child("p", polite)  # the id is free again
        await trio.sleep(1)
        assert sup.children() == ["q", "p"]
        nursery.cancel_scope.cancel()


async def test_stop_child_forced_after_grace(autojump_clock: Clock) -> None:
    outcome: list[str] = []

    async def stubborn(ctx: ChildContext) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append(f"cancelled stop_requested={ctx.stop_requested}")
            raise

    sup = Supervisor("s", policy=POLICY)
    sup.start_child("s", stubborn)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.stop_child("s", grace=2.5)
        assert trio.current_time() == 2.5
        assert outcome == ["cancelled stop_requested=True"]
        assert sup.children() == []
        nursery.cancel_scope.cancel()


async def test_stop_child_in_backoff_is_immediate(autojump_clock: Clock) -> None:
    sup = Supervisor("s", policy=RestartPolicy(backoff_initial=30, backoff_max=30, jitter=0))
    sup.start_child("c", recorder([], "c", crash_runs=10, run_for=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        assert sup.statistics().children[0].state is ChildState.BACKOFF
        await sup.stop_child("c")
        assert trio.current_time() == 1.0 and sup.children() == []
        nursery.cancel_scope.cancel()


async def test_stop_returns_run_normally_in_reverse_order(autojump_clock: Clock) -> None:
    stopped: list[str] = []

    def polite(name: str) -> Callable[[ChildContext], Awaitable[None]]:
        async def fn(ctx: ChildContext) -> None:
            await ctx.wait_stop_requested()
            await trio.sleep(0.5)
            stopped.append(name)

        return fn

    sup = Supervisor("s", policy=POLICY)
    for name in "abc":
        sup.start_child(name, polite(name))
    run_returned = trio.Event()

    async def run() -> None:
        await sup.run()
        run_returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.sleep(1)
        await sup.stop(grace=5)
        assert stopped == ["c", "b", "a"]
        assert trio.current_time() == 2.5
        await run_returned.wait()
    assert sup.children() == []
    assert not sup.statistics().running


async def test_stop_before_run_makes_run_return(autojump_clock: Clock) -> None:
    sup = Supervisor("s")
    sup.start_child("a", recorder([], "a"))
    await sup.stop()
    assert sup.children() == []
    with trio.fail_after(1):
        await sup.run()


async def test_external_cancel_propagates_and_leaves_no_tasks(autojump_clock: Clock) -> None:
    finished: list[str] = []

    def child(name: str, crash_runs: int) -> Callable[[ChildContext], Awaitable[None]]:
        inner = recorder([], name, crash_runs, run_for=0.5)

        async def fn(ctx: ChildContext) -> None:
            try:
                await inner(ctx)
            finally:
                finished.append(name)

        return fn

    sup = Supervisor("s", policy=RestartPolicy(backoff_initial=100, backoff_max=100, jitter=0))
    sup.start_child("runner", child("runner", 0))
    sup.start_child("backing-off", child("backing-off", 1))
    before = all_tasks()
    with trio.move_on_after(5) as scope:
        await sup.run()
    assert scope.cancelled_caught
    assert trio.current_time() == 5.0  # prompt: not held up by the 100s backoff
    assert sorted(finished) == ["backing-off", "runner"]
    assert all_tasks() == before  # nothing left behind
    stats = sup.statistics()
    assert not stats.running
    assert {c.state for c in stats.children} == {ChildState.STOPPED}
    # and the supervisor can run again (as a parent restarting it would)
    with trio.move_on_after(1):
        await sup.run()
    assert finished.count("runner") == 2


async def test_transient_and_temporary(autojump_clock: Clock) -> None:
    runs: list[str] = []

    def child(name: str, crash: bool) -> Callable[[ChildContext], Awaitable[None]]:
        async def fn(ctx: ChildContext) -> None:
            runs.append(f"{name}{ctx.restarts}")
            await trio.sleep(1)
            if crash and ctx.restarts == 0:
                raise ValueError(name)
            if name == "permanent-returns" and ctx.restarts >= 2:
                await trio.sleep_forever()

        return fn

    sup = Supervisor("s", policy=POLICY)
    sup.start_child("transient-returns", child("tr", False), restart=Restart.TRANSIENT)
    sup.start_child("transient-crashes", child("tc", True), restart=Restart.TRANSIENT)
    sup.start_child("temporary-crashes", child("xc", True), restart=Restart.TEMPORARY)
    sup.start_child("temporary-returns", child("xr", False), restart=Restart.TEMPORARY)
    sup.start_child("permanent-returns", child("permanent-returns", False))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(30)
        stats = sup.statistics()
        nursery.cancel_scope.cancel()
    permanent = ["permanent-returns0", "permanent-returns1", "permanent-returns2"]
    assert sorted(runs) == sorted(["tr0", "tc0", "tc1", "xc0", "xr0", *permanent])
    # transient crashed -> restarted then returned -> removed; temporaries removed
    assert [c.child_id for c in stats.children] == ["permanent-returns"]
    # the permanent normal returns and the transient crash count; temporary ones do not
    assert stats.total_restarts == 3


async def test_temporary_sibling_is_not_restarted_by_one_for_all(autojump_clock: Clock) -> None:
    log: list[tuple[str, int, float]] = []
    sup = Supervisor("s", strategy=Strategy.ONE_FOR_ALL, policy=POLICY)
    sup.start_child("tmp", recorder(log, "tmp"), restart=Restart.TEMPORARY)
    sup.start_child("bad", recorder(log, "bad", crash_runs=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert names(log) == ["tmp", "bad", "bad"]
    assert sup.children() == ["bad"]


async def test_dynamic_add_while_running_and_duplicates(autojump_clock: Clock) -> None:
    log: list[tuple[str, int, float]] = []
    sup = Supervisor("s", policy=POLICY)
    sup.start_child("early", recorder(log, "early"))
    with pytest.raises(ValueError, match="already has a child 'early'"):
        sup.start_child("early", recorder(log, "dup"))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert names(log) == ["early"]  # children registered before run started with it
        await trio.sleep(2)
        sup.start_child("late", recorder(log, "late", crash_runs=1))
        with pytest.raises(ValueError):
            sup.start_child("late", recorder(log, "dup"))
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert log == [("early", 0, 0.0), ("late", 0, 2.0), ("late", 1, 4.0)]
    assert sup.children() == ["early", "late"]


async def test_statistics_snapshot(autojump_clock: Clock) -> None:
    async def worker(ctx: ChildContext) -> None:
        ctx.set_status("replaying")
        await trio.sleep_forever()

    sup = Supervisor("parts", strategy=Strategy.REST_FOR_ONE, policy=POLICY)
    sup.start_child(("orders", 3), worker, restart=Restart.TRANSIENT)
    sup.start_child("crashy", recorder([], "crashy", crash_runs=1))
    before = sup.statistics()
    assert before == SupervisorStatistics(
        name="parts",
        strategy=Strategy.REST_FOR_ONE,
        children=(
            ChildStatistics(
                ("orders", 3), ChildState.STARTING, Restart.TRANSIENT, 0, None, 0.0, None, None
            ),
            ChildStatistics(
                "crashy", ChildState.STARTING, Restart.PERMANENT, 0, None, 0.0, None, None
            ),
        ),
        total_restarts=0,
        gave_up=False,
        running=False,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1.5)
        snap = sup.statistics()
        await trio.sleep(5)
        assert sup.statistics() != snap  # a snapshot, not a live view
        nursery.cancel_scope.cancel()
    assert snap.running and snap.total_restarts == 1 and not snap.gave_up
    orders, crashy = snap.children
    assert orders.status == "replaying" and orders.state is ChildState.RUNNING
    assert crashy.state is ChildState.BACKOFF
    assert crashy.last_error == "ValueError: crashy crash 0"
    assert crashy.current_backoff == 1.0 and crashy.started_at == 0.0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        snap.total_restarts = 5  # type: ignore[misc]


async def test_nested_supervisor_gave_up_is_a_crash_of_its_child(autojump_clock: Clock) -> None:
    inner_runs: list[float] = []
    inner = Supervisor(
        "inner", policy=RestartPolicy(max_restarts=1, within=10, backoff_initial=0.1, jitter=0)
    )
    inner.start_child("bad", recorder([], "bad", crash_runs=10**6, run_for=0.1))

    async def run_inner(ctx: ChildContext) -> None:
        inner_runs.append(trio.current_time())
        await inner.run()

    outer = Supervisor("outer", policy=POLICY)
    outer.start_child("inner", run_inner)
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        await trio.sleep(5)
        (child,) = outer.statistics().children
        nursery.cancel_scope.cancel()
    assert len(inner_runs) >= 3  # restarted by the parent, with backoff
    assert child.last_error is not None and "gave up" in child.last_error
    assert child.restarts == len(inner_runs) - 1


async def test_run_as_child_turns_stop_request_into_graceful_stop(autojump_clock: Clock) -> None:
    stopped: list[str] = []

    async def polite(ctx: ChildContext) -> None:
        await ctx.wait_stop_requested()
        stopped.append("leaf")

    inner = Supervisor("inner")
    inner.start_child("leaf", polite)
    outer = Supervisor("outer")
    outer.start_child("inner", inner.run_as_child)
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        await trio.sleep(1)
        await outer.stop_child("inner", grace=10)
        assert trio.current_time() == 1.0  # graceful all the way down, no grace expired
        assert stopped == ["leaf"]
        nursery.cancel_scope.cancel()


async def test_run_twice_concurrently_is_refused(autojump_clock: Clock) -> None:
    sup = Supervisor("s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(RuntimeError, match="already running"):
            await sup.run()
        nursery.cancel_scope.cancel()


async def test_bad_arguments() -> None:
    from actorstream._core.errors import ConfigError

    with pytest.raises(ConfigError):
        Supervisor("s", strategy="one_for_one")  # type: ignore[arg-type]
    sup = Supervisor("s")
    with pytest.raises(ValueError, match="grace"):
        await sup.stop_child("x", grace=-1)


def _hang_guard(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A broken supervisor tends to hang (autojump spins forever): make that a failure."""

    @functools.wraps(test)
    async def guarded(*args: object, **kwargs: object) -> None:
        with trio.fail_after(1000):
            await test(*args, **kwargs)

    return guarded


for _name, _test in list(globals().items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test):
        globals()[_name] = _hang_guard(_test)
