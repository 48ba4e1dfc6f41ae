"""Property tests of the pure assignment: balance, stickiness, determinism, idempotence."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Mapping

from hypothesis import assume, given
from hypothesis import strategies as st

from actorstream._core.assignment import Plan, Slot, assign, min_moves, moves, plan_step
from actorstream._core.leasetiming import Lease, LeaseTiming

POOL = [f"w{i}" for i in range(8)]
ACTORS = ["alpha", "beta", "gamma"]


@st.composite
def slot_sets(draw: st.DrawFn, max_partitions: int = 17) -> list[Slot]:
    actors = draw(st.lists(st.sampled_from(ACTORS), min_size=0, max_size=3, unique=True))
    return [Slot(actor, p) for actor in actors for p in range(draw(st.integers(0, max_partitions)))]


members_st = st.lists(st.sampled_from(POOL), min_size=1, max_size=7, unique=True)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[str], list[Slot], dict[Slot, str]]:
    """Members, slots and an arbitrary (unbalanced, partly stale) current ownership."""
    members = draw(members_st)
    slots = draw(slot_sets())
    owners = st.sampled_from([*POOL, "ghost"])  # some owners are not members
    current = {s: draw(owners) for s in slots if draw(st.booleans()) or draw(st.booleans())}
    # A stale entry for a slot that no longer exists must be ignored.
    current[Slot("retired", 0)] = members[0]
    return members, slots, current


def per_actor_counts(result: Mapping[Slot, str], members: list[str]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for slot, owner in result.items():
        counts.setdefault(slot.actor, Counter({m: 0 for m in members}))[owner] += 1
    return counts


def assert_balanced(result: Mapping[Slot, str], members: list[str]) -> None:
    for actor, counter in per_actor_counts(result, members).items():
        values = [counter[m] for m in members]
        assert max(values) - min(values) <= 1, (actor, counter)


def moved(current: Mapping[Slot, str], result: Mapping[Slot, str]) -> int:
    return sum(1 for slot, owner in result.items() if current.get(slot) != owner)


@given(worlds())
def test_every_slot_gets_a_member(world: tuple[list[str], list[Slot], dict[Slot, str]]) -> None:
    members, slots, current = world
    result = assign(members, slots, current)
    assert set(result) == set(slots)
    assert set(result.values()) <= set(members)


@given(
    slot_sets(),
    st.dictionaries(
        st.builds(Slot, st.sampled_from(ACTORS), st.integers(0, 9)), st.sampled_from(POOL)
    ),
)
def test_no_members_no_assignment(slots: list[Slot], current: dict[Slot, str]) -> None:
    assert assign([], slots, current) == {}


@given(worlds())
def test_balanced_per_actor(world: tuple[list[str], list[Slot], dict[Slot, str]]) -> None:
    members, slots, current = world
    assert_balanced(assign(members, slots, current), members)


@given(members_st, slot_sets())
def test_totals_even_from_scratch(members: list[str], slots: list[Slot]) -> None:
    totals = Counter({m: 0 for m in members})
    totals.update(assign(members, slots, {}).values())
    assert max(totals.values()) - min(totals.values()) <= 1, totals


def test_three_actors_sixteen_partitions_five_workers() -> None:
    slots = [Slot(a, p) for a in ACTORS for p in range(16)]
    result = assign([f"w{i}" for i in range(5)], slots, {})
    assert sorted(Counter(result.values()).values()) == [9, 9, 10, 10, 10]
    assert_balanced(result, [f"w{i}" for i in range(5)])


@given(worlds(), st.randoms(use_true_random=False))
def test_deterministic_under_shuffles(
    world: tuple[list[str], list[Slot], dict[Slot, str]], rnd: random.Random
) -> None:
    members, slots, current = world
    expected = assign(members, slots, current)
    m2, s2, items = list(members), list(slots), list(current.items())
    rnd.shuffle(m2)
    rnd.shuffle(s2)
    rnd.shuffle(items)
    # Duplicates in the inputs do not matter either.
    assert assign(m2 + m2[:1], s2 + s2[:2], dict(items)) == expected
    assert assign(frozenset(m2), frozenset(s2), dict(items)) == expected


@given(worlds())
def test_idempotent(world: tuple[list[str], list[Slot], dict[Slot, str]]) -> None:
    members, slots, current = world
    once = assign(members, slots, current)
    assert assign(members, slots, once) == once
    assert moves(once, assign(members, slots, once)) == {}


@given(worlds())
def test_moves_the_minimum(world: tuple[list[str], list[Slot], dict[Slot, str]]) -> None:
    members, slots, current = world
    result = assign(members, slots, current)
    assert moved(current, result) == min_moves(members, slots, current)


def brute_force_min_moves(
    members: list[str], slots: list[Slot], current: Mapping[Slot, str]
) -> int:
    best = len(slots) + 1
    for owners in itertools.product(members, repeat=len(slots)):
        candidate = dict(zip(slots, owners, strict=True))
        counts = per_actor_counts(candidate, members)
        if all(max(c.values()) - min(c.values()) <= 1 for c in counts.values()):
            best = min(best, moved(current, candidate))
    return best


@given(
    st.lists(st.sampled_from(POOL[:3]), min_size=1, max_size=3, unique=True),
    st.integers(1, 4),
    st.integers(0, 3),
    st.data(),
)
def test_min_moves_is_the_true_minimum(
    members: list[str], n_alpha: int, n_beta: int, data: st.DataObject
) -> None:
    """The stickiness oracle itself, checked against exhaustive search on small worlds."""
    slots = [Slot("alpha", p) for p in range(n_alpha)] + [Slot("beta", p) for p in range(n_beta)]
    current = data.draw(
        st.dictionaries(st.sampled_from(slots), st.sampled_from(POOL[:4])), label="current"
    )
    expected = brute_force_min_moves(members, slots, current)
    assert min_moves(members, slots, current) == expected
    assert moved(current, assign(members, slots, current)) == expected


@given(worlds(), st.data())
def test_join_moves_only_what_the_newcomer_needs(
    world: tuple[list[str], list[Slot], dict[Slot, str]], data: st.DataObject
) -> None:
    members, slots, current = world
    # Names that sort before, between and after the members'.
    fresh = sorted({*POOL, "a-new", "w3.5", "zz"} - set(members))
    newcomer = data.draw(st.sampled_from(fresh), label="newcomer")
    before = assign(members, slots, current)
    after = assign([*members, newcomer], slots, before)
    changed = moves(before, after)
    # Every moved slot goes to the newcomer, and it gets exactly its quota per actor.
    assert {new for _, new in changed.values()} <= {newcomer}
    m = len(members) + 1
    for actor, counter in per_actor_counts(after, [*members, newcomer]).items():
        n = sum(counter.values())
        assert counter[newcomer] in (n // m, n // m + (n % m > 0)), actor
    assert len(changed) == sum(1 for owner in after.values() if owner == newcomer)
    assert len(changed) == min_moves([*members, newcomer], slots, before)
    assert_balanced(after, [*members, newcomer])


@given(worlds(), st.data())
def test_leave_moves_only_the_leavers_slots(
    world: tuple[list[str], list[Slot], dict[Slot, str]], data: st.DataObject
) -> None:
    members, slots, current = world
    assume(len(members) >= 2)
    leaver = data.draw(st.sampled_from(members), label="leaver")
    before = assign(members, slots, current)
    rest = [m for m in members if m != leaver]
    after = assign(rest, slots, before)
    changed = moves(before, after)
    assert {old for old, _ in changed.values()} <= {leaver}
    assert len(changed) == sum(1 for owner in before.values() if owner == leaver)
    assert_balanced(after, rest)


@given(worlds(), st.lists(st.sampled_from(POOL), min_size=1, max_size=7, unique=True))
def test_any_membership_change_is_minimal_and_balanced(
    world: tuple[list[str], list[Slot], dict[Slot, str]], new_members: list[str]
) -> None:
    members, slots, current = world
    before = assign(members, slots, current)
    after = assign(new_members, slots, before)
    assert len(moves(before, after)) == min_moves(new_members, slots, before)
    assert_balanced(after, new_members)


def test_moves_reports_old_and_new_owner() -> None:
    a0, a1, a2 = Slot("a", 0), Slot("a", 1), Slot("a", 2)
    assert moves({a0: "x", a1: "y"}, {a0: "x", a1: "z", a2: "x"}) == {
        a1: ("y", "z"),
        a2: (None, "x"),
    }
    assert moves({a0: "x"}, {}) == {a0: ("x", None)}


def test_over_quota_member_keeps_its_lowest_partitions() -> None:
    slots = [Slot("a", p) for p in range(4)]
    result = assign(["x", "y"], slots, dict.fromkeys(slots, "x"))
    assert [result[s] for s in slots] == ["x", "x", "y", "y"]


# plan_step: the decisions of one coordinator step.

TIMING = LeaseTiming()
A0, A1, A2, A3 = (Slot("a", p) for p in range(4))
SLOTS = [A0, A1, A2, A3]


def lease(epoch: int = 1, at: float = 100.0) -> Lease:
    return Lease(epoch=epoch, acquired_at=at, timing=TIMING)


def test_plan_first_worker_acquires_everything_free() -> None:
    plan = plan_step("x", [], SLOTS, {}, {}, now=0.0)
    assert plan == Plan(acquire=(A0, A1, A2, A3), target=dict.fromkeys(SLOTS, "x"))
    assert not plan.idle


def test_plan_join_releases_and_waits_for_release() -> None:
    view = dict.fromkeys(SLOTS, "x")
    held = {s: lease() for s in SLOTS}
    # The old owner drains and releases the two slots the newcomer should get.
    plan_x = plan_step("x", ["x", "y"], SLOTS, view, held, now=100.5)
    assert plan_x.release == (A2, A3)
    assert plan_x.acquire == () and plan_x.fence == () and plan_x.renew == ()
    # The newcomer does not take them while x still holds the leases.
    plan_y = plan_step("y", ["x", "y"], SLOTS, view, {}, now=7.0)
    assert plan_y.target[A2] == "y" and plan_y.acquire == ()
    # Once released, it does.
    plan_y = plan_step("y", ["x", "y"], SLOTS, {A0: "x", A1: "x"}, {}, now=8.0)
    assert plan_y.acquire == (A2, A3)


def test_plan_renews_when_due_including_slots_being_drained() -> None:
    view = dict.fromkeys(SLOTS, "x")
    held = {s: lease() for s in SLOTS}
    plan = plan_step("x", ["x", "y"], SLOTS, view, held, now=100.0 + TIMING.renew_interval)
    assert plan.renew == (A0, A1, A2, A3)
    assert plan.release == (A2, A3)


def test_plan_fences_expired_trust_and_reacquires_own_stale_lease() -> None:
    view = {A0: "x", A1: "x"}
    held = {A0: lease(at=100.0), A1: lease(at=103.0)}
    now = 100.0 + TIMING.trusted_for
    plan = plan_step("x", ["x"], [A0, A1], view, held, now=now)
    assert plan.fence == (A0,)
    assert plan.renew == (A1,)
    # Redis still names x as the holder: re-acquiring bumps the epoch, fencing the old actor.
    assert plan.acquire == (A0,)


def test_plan_fences_a_lease_redis_no_longer_shows() -> None:
    held = {A0: lease(), A1: lease()}
    plan = plan_step("x", ["x", "y"], [A0, A1], {A0: "y"}, held, now=100.5)
    assert plan.fence == (A0, A1)
    assert plan.acquire == (A1,)  # free again and assigned to x (A0 is y's, sticky)


def test_plan_waits_for_a_dead_owners_lease_to_expire() -> None:
    # "z" crashed: no longer a member, but its lease in Redis is still alive.
    plan = plan_step("x", ["x"], [A0, A1], {A0: "z"}, {}, now=0.0)
    assert plan.target == {A0: "x", A1: "x"}
    assert plan.acquire == (A1,)


def test_plan_counts_itself_as_member() -> None:
    held = {A0: lease()}
    plan = plan_step("x", ["y"], [A0, A1], {A0: "x"}, held, now=100.5)
    assert plan.release == () and plan.target[A0] == "x"
    assert plan.acquire == ()  # A1 is y's share


def test_plan_idle_when_converged() -> None:
    held = {A0: lease(), A1: lease()}
    plan = plan_step("x", ["x", "y"], SLOTS, {A0: "x", A1: "x", A2: "y", A3: "y"}, held, 100.5)
    assert plan.idle
    assert hash(plan) == hash(Plan(target={}))  # the target does not take part in hashing
