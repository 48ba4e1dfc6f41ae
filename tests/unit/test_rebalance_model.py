"""Model-based test of the pure rebalance core (scenario 24 of docs/scenarios.md).

A Hypothesis state machine drives workers that run the *real* decision code (``plan_step``,
``assign``, ``Lease``) against a model of Redis that holds, per slot, ``(owner, epoch,
expires_at)`` and, per member, a heartbeat expiry. The model Redis behaves like the Lua scripts:
acquire succeeds on a free (or the caller's own) lease and increments the epoch; renew and release
are compare-and-set on (owner, epoch); a side effect is accepted only with the current epoch.

Time: one global clock (Redis's), and per worker a local monotonic clock with its own offset. A
paused worker (SIGSTOP, GC, a hung loop) simply takes no action while time advances; on resuming
it must pass ``must_self_fence`` before any side effect. A coordinator step can also be split in
two (plan from a view of Redis, then execute later, after time passed and others acted), which
models a stale view and a pause between deciding and acting. All times are multiples of 0.25 so
they are exact in binary floating point and boundaries (``now == deadline``) are hit exactly.

Invariants after every step:

* EXC: every lease a worker still trusts (holds, and passes the self-fence check on its own
  clock) is the live lease in Redis with the same owner and epoch, so at most one worker per slot
  could have a side effect accepted in any epoch, even counting paused workers as if resumed now;
* epochs never decrease; every accepted side effect came from the current epoch's live owner, and
  per slot the accepted writes have nondecreasing epochs and one writer per epoch;
* after a quiet period (everyone resumed, no faults, enough steps and time) every slot is owned by
  a live member that trusts its lease, the ownership is balanced per actor, and one more round of
  steps changes nothing.
"""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from actorstream._core.assignment import Plan, Slot, assign, plan_step
from actorstream._core.leasetiming import Lease, LeaseTiming

TIMINGS = [
    LeaseTiming(),
    LeaseTiming(
        ttl=3.0,
        renew_interval=1.0,
        heartbeat_interval=0.5,
        member_timeout=2.0,
        self_fence_margin=0.5,
    ),
    # Members outlive leases: a silent worker keeps its place in the assignment after its
    # leases lapsed, so its partitions sit unowned until the membership times out.
    LeaseTiming(
        ttl=3.0,
        renew_interval=1.0,
        heartbeat_interval=1.0,
        member_timeout=8.0,
        self_fence_margin=0.75,
    ),
]

MAX_WORKERS = 5


def event(label: str) -> None:
    """Count a hypothesis event (shown by --hypothesis-show-statistics); no-op outside a test."""
    if currently_in_test_context():
        hypothesis_event(label)


QUARTERS = st.integers(1, 48).map(lambda n: n * 0.25)  # 0.25 .. 12 seconds


@attrs.define
class RedisSlot:
    owner: str | None = None
    epoch: int = 0
    expires_at: float = -math.inf


@attrs.define
class ModelRedis:
    """What the Lua scripts and key expiry would do, on Redis's own (global) clock."""

    slots: dict[Slot, RedisSlot]
    members: dict[str, float] = attrs.Factory(dict)

    def owner(self, slot: Slot, now: float) -> str | None:
        state = self.slots[slot]
        return state.owner if now < state.expires_at else None

    def owners_view(self, now: float) -> dict[Slot, str]:
        return {slot: owner for slot in self.slots if (owner := self.owner(slot, now)) is not None}

    def live_members(self, now: float) -> set[str]:
        return {member for member, expires_at in self.members.items() if now < expires_at}

    def heartbeat(self, member: str, now: float, timeout: float) -> None:
        self.members[member] = now + timeout

    def leave(self, member: str) -> None:
        self.members.pop(member, None)

    def acquire(self, slot: Slot, caller: str, now: float, ttl: float) -> int | None:
        if self.owner(slot, now) not in (None, caller):
            return None
        state = self.slots[slot]
        state.epoch += 1
        state.owner, state.expires_at = caller, now + ttl
        return state.epoch

    def renew(self, slot: Slot, caller: str, epoch: int, now: float, ttl: float) -> bool:
        state = self.slots[slot]
        if self.owner(slot, now) != caller or state.epoch != epoch:
            return False
        state.expires_at = now + ttl
        return True

    def release(self, slot: Slot, caller: str, epoch: int, now: float) -> bool:
        state = self.slots[slot]
        if self.owner(slot, now) != caller or state.epoch != epoch:
            return False
        state.owner, state.expires_at = None, -math.inf
        return True

    def side_effect(self, slot: Slot, epoch: int) -> bool:
        """The fencing check every XACK / dead-letter / claim script starts with."""
        return self.slots[slot].epoch == epoch


@attrs.define
class Worker:
    id: str
    offset: float
    leases: dict[Slot, Lease] = attrs.Factory(dict)
    paused: bool = False
    pending: Plan | None = None


class RebalanceModel(RuleBasedStateMachine):
    #: Flip off in a mutant to check that the model catches a worker that does not self-fence.
    SELF_FENCE = True

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.timing = TIMINGS[0]
        self.slots: list[Slot] = []
        self.redis = ModelRedis({})
        self.workers: dict[str, Worker] = {}
        self.next_id = 0
        self.epochs: dict[Slot, int] = {}
        self.accepted: dict[Slot, list[tuple[int, str]]] = {}

    # -- helpers -------------------------------------------------------------------------------

    def local(self, worker: Worker) -> float:
        return self.now + worker.offset

    def trusts(self, worker: Worker, lease: Lease) -> bool:
        return not self.SELF_FENCE or not lease.must_self_fence(self.local(worker))

    def pick(self, data: st.DataObject, *, paused: bool | None = False) -> Worker:
        ids = sorted(w.id for w in self.workers.values() if paused is None or w.paused == paused)
        return self.workers[data.draw(st.sampled_from(ids), label="worker")]

    def plan(self, worker: Worker) -> Plan:
        """Heartbeat, read membership and leases from Redis, decide."""
        self.redis.heartbeat(worker.id, self.now, self.timing.member_timeout)
        return plan_step(
            worker.id,
            self.redis.live_members(self.now),
            self.slots,
            self.redis.owners_view(self.now),
            worker.leases,
            self.local(worker),
        )

    def execute(self, worker: Worker, plan: Plan) -> None:
        """Carry a plan out, as the coordinator does, possibly long after it was made."""
        now, ttl = self.local(worker), self.timing.ttl
        for slot in plan.fence:
            worker.leases.pop(slot, None)  # stop the partition actor, no further side effect
        for slot in plan.release:
            lease = worker.leases.pop(slot, None)  # drained: in-flight events were acked
            if lease is not None:
                self.redis.release(slot, worker.id, lease.epoch, self.now)
        for slot in plan.renew:
            lease = worker.leases.get(slot)
            if lease is None:
                continue
            if self.redis.renew(slot, worker.id, lease.epoch, self.now, ttl):
                worker.leases[slot] = lease.renewed(sent_at=now)
            else:
                event("renew refused: lease lost")
                del worker.leases[slot]
        for slot in plan.acquire:
            if slot in worker.leases:
                continue
            epoch = self.redis.acquire(slot, worker.id, self.now, ttl)
            if epoch is None:
                event("acquire refused: slot taken meanwhile")
            else:
                worker.leases[slot] = Lease(epoch=epoch, acquired_at=now, timing=self.timing)

    def step(self, worker: Worker) -> Plan:
        plan = self.plan(worker)
        self.execute(worker, plan)
        worker.pending = None
        return plan

    def has_active(self) -> bool:
        return any(not w.paused for w in self.workers.values())

    # -- rules ---------------------------------------------------------------------------------

    @initialize(
        timing=st.sampled_from(TIMINGS),
        partitions=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    )
    def setup(self, timing: LeaseTiming, partitions: list[int]) -> None:
        self.timing = timing
        self.slots = [Slot(f"actor{i}", p) for i, n in enumerate(partitions) for p in range(n)]
        self.redis = ModelRedis({slot: RedisSlot() for slot in self.slots})
        self.epochs = dict.fromkeys(self.slots, 0)

    @precondition(lambda self: len(self.workers) < MAX_WORKERS)
    @rule(offset=st.integers(-40_000, 40_000).map(lambda n: n * 0.25))
    def join(self, offset: float) -> None:
        worker = Worker(f"w{self.next_id}", offset)
        self.next_id += 1
        self.workers[worker.id] = worker

    @precondition(lambda self: self.has_active())
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        """Graceful shutdown: drain, release every lease, leave the membership at once."""
        worker = self.pick(data)
        for slot, lease in sorted(worker.leases.items()):
            self.redis.release(slot, worker.id, lease.epoch, self.now)
        self.redis.leave(worker.id)
        del self.workers[worker.id]

    @precondition(lambda self: bool(self.workers))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """kill -9 (paused or not): nothing released, Redis keeps its state until expiry."""
        worker = self.pick(data, paused=None)
        del self.workers[worker.id]

    @precondition(lambda self: self.has_active())
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        self.pick(data).paused = True

    @precondition(lambda self: any(w.paused for w in self.workers.values()))
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        self.pick(data, paused=True).paused = False

    @rule(dt=QUARTERS)
    def advance(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.has_active())
    @rule(data=st.data())
    def coordinator_step(self, data: st.DataObject) -> None:
        self.step(self.pick(data))

    @precondition(lambda self: self.has_active())
    @rule(data=st.data())
    def coordinator_plan_only(self, data: st.DataObject) -> None:
        """Decide now, act later: the next ``coordinator_execute`` uses this stale plan."""
        worker = self.pick(data)
        worker.pending = self.plan(worker)

    @precondition(
        lambda self: any(not w.paused and w.pending is not None for w in self.workers.values())
    )
    @rule(data=st.data())
    def coordinator_execute(self, data: st.DataObject) -> None:
        ids = sorted(w.id for w in self.workers.values() if not w.paused and w.pending)
        worker = self.workers[data.draw(st.sampled_from(ids), label="worker")]
        assert worker.pending is not None
        plan, worker.pending = worker.pending, None
        self.execute(worker, plan)

    @precondition(lambda self: any(not w.paused and w.leases for w in self.workers.values()))
    @rule(data=st.data())
    def side_effect(self, data: st.DataObject) -> None:
        """A partition actor acks / dead-letters / claims on a slot its worker believes it owns."""
        ids = sorted(w.id for w in self.workers.values() if not w.paused and w.leases)
        worker = self.workers[data.draw(st.sampled_from(ids), label="worker")]
        slot = data.draw(st.sampled_from(sorted(worker.leases)), label="slot")
        lease = worker.leases[slot]
        if not self.trusts(worker, lease):
            event("side effect: self-fenced before writing")
            del worker.leases[slot]
            return
        if not self.redis.side_effect(slot, lease.epoch):
            event("side effect: FENCED by Redis")
            del worker.leases[slot]
            return
        event("side effect: accepted")
        state = self.redis.slots[slot]
        assert self.redis.owner(slot, self.now) == worker.id, (slot, worker.id, state)
        assert state.epoch == lease.epoch
        log = self.accepted.setdefault(slot, [])
        if log:
            last_epoch, last_writer = log[-1]
            assert lease.epoch >= last_epoch, (slot, log, lease.epoch)
            assert lease.epoch != last_epoch or worker.id == last_writer, (slot, log, worker.id)
        log.append((lease.epoch, worker.id))

    @precondition(lambda self: bool(self.workers))
    @rule()
    def settle(self) -> None:
        """A quiet period: no faults, every worker resumed and stepping regularly."""
        for worker in self.workers.values():
            worker.paused, worker.pending = False, None
        timing = self.timing
        dt = timing.heartbeat_interval
        # Renewals run at most dt late, and stay well inside the trusted window.
        assert timing.renew_interval + dt < timing.trusted_for
        quiet = max(timing.ttl, timing.member_timeout) + 2 * timing.renew_interval
        rounds = math.ceil(quiet / dt) + 2 * len(self.slots) + 2
        for _ in range(rounds):
            for worker_id in sorted(self.workers):
                self.step(self.workers[worker_id])
            self.now += dt
            self.check_safety()
        plans = {wid: self.step(self.workers[wid]) for wid in sorted(self.workers)}
        self.check_safety()

        live = sorted(self.workers)
        event(f"settled with {len(live)} worker(s)")
        assert all(plan.idle for plan in plans.values()), plans
        assert self.redis.live_members(self.now) == set(live)
        owners: dict[Slot, str] = {}
        for slot in self.slots:
            owner = self.redis.owner(slot, self.now)
            if not live:
                assert owner is None, slot
                continue
            assert owner in self.workers, (slot, owner)
            lease = self.workers[owner].leases.get(slot)
            assert lease is not None and self.trusts(self.workers[owner], lease), (slot, owner)
            owners[slot] = owner
        for worker in self.workers.values():
            assert all(owners[slot] == worker.id for slot in worker.leases), worker
        for actor in {slot.actor for slot in self.slots}:
            counts = [
                sum(1 for s, o in owners.items() if s.actor == actor and o == w) for w in live
            ]
            if counts:
                assert max(counts) - min(counts) <= 1, (actor, counts)
        # The converged ownership is exactly the (idempotent) target assignment.
        assert not live or assign(live, self.slots, owners) == owners

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def check_safety(self) -> None:
        trusted: dict[Slot, list[str]] = {}
        for worker in self.workers.values():
            for slot, lease in worker.leases.items():
                state = self.redis.slots[slot]
                assert lease.epoch <= state.epoch, (worker.id, slot, lease, state)
                if self.trusts(worker, lease):
                    trusted.setdefault(slot, []).append(worker.id)
                    assert self.redis.owner(slot, self.now) == worker.id, (
                        "a trusted lease is not the live lease in Redis",
                        worker.id,
                        slot,
                        lease,
                        state,
                        self.now,
                    )
                    assert lease.epoch == state.epoch, (worker.id, slot, lease, state)
        for slot, holders in trusted.items():
            assert len(holders) == 1, ("two trusted owners", slot, holders)
        for slot, state in self.redis.slots.items():
            assert state.epoch >= self.epochs[slot], (slot, state, self.epochs[slot])
            self.epochs[slot] = state.epoch


RebalanceModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRebalanceModel = RebalanceModel.TestCase


class NoSelfFence(RebalanceModel):
    """A mutant whose workers trust their leases forever (like the peer without fencing)."""

    SELF_FENCE = False


def test_model_catches_a_worker_that_does_not_self_fence() -> None:
    """The invariants have teeth: without self-fencing a zombie still trusts a lease that Redis
    has given to another worker. (Redis's epoch check still refuses its writes.)"""
    with pytest.raises(AssertionError, match="trusted lease is not the live lease"):
        run_state_machine_as_test(
            NoSelfFence,
            settings=settings(
                max_examples=2000,
                stateful_step_count=60,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )


def test_quiet_cluster_scenario_by_hand() -> None:
    """Three workers, one crashes, one pauses past its TTL and resumes: no overlap, converges."""
    model = RebalanceModel()
    model.setup(TIMINGS[0], [4, 4])
    for offset in (0.0, 123.25, -77.5):
        model.join(offset)
    model.settle()
    zombie, victim = model.workers["w1"], model.workers["w2"]
    zombie.paused = True
    held_by_zombie = dict(zombie.leases)
    assert held_by_zombie
    del model.workers[victim.id]  # kill -9
    model.now += model.timing.ttl + model.timing.member_timeout
    model.step(model.workers["w0"])
    model.check_safety()
    assert all(model.redis.owner(s, model.now) == "w0" for s in held_by_zombie)
    # The zombie wakes up: every lease it still holds fails the self-fence check.
    zombie.paused = False
    assert all(lease.must_self_fence(model.local(zombie)) for lease in zombie.leases.values())
    model.check_safety()
    model.settle()
    assert sorted(model.workers) == ["w0", "w1"]
