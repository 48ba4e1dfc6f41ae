"""The coordinator actor: membership heartbeats, fenced leases, sticky rebalancing.

Every step (each ``heartbeat_interval``, or sooner when woken):

1. heartbeat on the server's clock and read the live members (one script call);
2. read the holder of every lease (one pipeline of GETs);
3. ``plan_step`` (pure, in ``_core.assignment``) decides what to fence, renew, release and acquire;
4. carry the plan out: fenced slots are stopped at once; renewals are compare-and-set and
   pipelined; slots assigned elsewhere are drained in the background (the partition actor
   finishes and acks its in-flight events) and only then released; free slots assigned to us
   are acquired (the epoch increments) and their partition actors started.

A moving partition is therefore always released by its old owner (or its lease has expired)
before the new owner acquires it, and every write of the old owner after that is FENCED by Redis.
"""

from __future__ import annotations

import collections
import logging
import random
import uuid
from collections.abc import Mapping
from typing import Any

import trio
from attrs import frozen
from redis.exceptions import OutOfMemoryError

from .._core import keys as _keys
from .._core.assignment import Slot, plan_step
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.fence import Fence
from .._core.leasetiming import Lease
from .._transport import Arg
from .._version import __version__
from . import scripts as _scripts
from .context import WorkerContext
from .partitions import PartitionsSupervisor

log = logging.getLogger("actorstream.coordinator")


@frozen
class CoordinatorStatistics:
    worker_id: str
    members: tuple[str, ...]
    owned: int
    unowned: int
    draining: int
    rebalances: int
    last_rebalance_at: float | None
    last_error: str | None
    t_own: float


class OwnershipState:
    """What this worker holds; lives in the root so a restarted coordinator carries on."""

    def __init__(self) -> None:
        self.leases: dict[Slot, Lease] = {}
        self.fences: dict[Slot, Fence] = {}
        self.draining: set[Slot] = set()
        self.members: tuple[str, ...] = ()
        self.owners: dict[Slot, str] = {}
        self.max_epoch: dict[Slot, int] = {}  # highest epoch seen per slot: detects regressions
        self.incarnation: bytes | None = None  # the app's token in Redis: a new one, data lost
        self.rebalances = 0
        self.last_rebalance_at: float | None = None
        self.last_error: str | None = None
        # For /metrics (actorstream_leases_lost_total, actorstream_redis_errors_total).
        self.leases_lost = 0
        self.redis_errors: collections.Counter[str] = collections.Counter()


@frozen
class CoordinatorContext:
    """The worker, every slot of the system, each actor's stream name, the ownership state
    (kept across coordinator restarts) and the partitions branch it starts and stops."""

    worker: WorkerContext
    slots: tuple[Slot, ...]
    stream_of: Mapping[str, str]
    ownership: OwnershipState
    partitions: PartitionsSupervisor


class Coordinator:
    def __init__(self, context: CoordinatorContext) -> None:
        self.worker = context.worker
        self.partitions = context.partitions
        self.timing = context.worker.settings.lease_timing
        self.state = context.ownership
        self.slots = list(context.slots)
        self._wake = trio.Event()
        self._rng = random.Random()
        app = context.worker.app
        stream_of = context.stream_of
        self._lease_keys = {
            s: _keys.lease_key(app, stream_of[s.actor], s.partition, s.actor)
            for s in self.slots
        }
        self._epoch_keys = {
            s: _keys.epoch_key(app, stream_of[s.actor], s.partition, s.actor)
            for s in self.slots
        }

    def wake(self) -> None:
        self._wake.set()

    def on_fenced(self, slot: Slot) -> None:
        """A partition actor was FENCED by Redis: forget the lease, re-plan now."""
        if self.state.leases.pop(slot, None) is not None:
            self.state.leases_lost += 1
        self.state.fences.pop(slot, None)
        self.wake()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        delay = 0.05
        started = False
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                try:
                    await self.step()
                    delay = 0.05
                    self.state.last_error = None
                    self.worker.redis.answered()
                except TRANSIENT_REDIS_ERRORS as exc:
                    self.state.redis_errors[type(exc).__name__] += 1
                    self.state.last_error = describe_error(exc)
                    self.worker.redis.unavailable("coordinator", self.state.last_error)
                    self._fence_expired()
                    with trio.move_on_after(delay * (0.5 + self._rng.random())):
                        await self.worker.wait_stopping()
                    delay = min(delay * 2, self.timing.renew_interval)
                    if not self.worker.is_stopping:
                        continue
                if not started:
                    started = True
                    task_status.started()
                if self.worker.is_stopping:
                    break
                await self._sleep_until_next_step()
            # Graceful leave: drain everything, release every lease, leave the membership.
            await self.leave()
            nursery.cancel_scope.cancel()

    async def _sleep_until_next_step(self) -> None:
        now = trio.current_time()
        wake_at = now + self.timing.heartbeat_interval
        for lease in self.state.leases.values():
            wake_at = min(wake_at, lease.renew_due_at)
        self._wake = trio.Event()
        with trio.move_on_at(max(wake_at, now + 0.01)):
            async with trio.open_nursery() as n:

                async def on_stop() -> None:
                    await self.worker.wait_stopping()
                    n.cancel_scope.cancel()

                async def on_wake() -> None:
                    await self._wake.wait()
                    n.cancel_scope.cancel()

                n.start_soon(on_stop)
                n.start_soon(on_wake)

    def _fence_expired(self) -> None:
        """Without Redis we cannot renew: stop actors whose lease trust has run out."""
        now = trio.current_time()
        for slot, lease in list(self.state.leases.items()):
            if lease.must_self_fence(now):
                self._drop(slot, "self-fenced: lease could not be renewed in time")

    def _drop(self, slot: Slot, why: str) -> None:
        if self.state.leases.pop(slot, None) is not None:
            self.state.leases_lost += 1
        fence = self.state.fences.pop(slot, None)
        if fence is not None:
            fence.revoke()
        self.worker.report("fenced", f"{slot.actor}[{slot.partition}]: {why}")
        # Stop it in our nursery, tracked, so the next step knows when it is gone:
        # until then the slot is not re-acquired (see step), else the new lease's actor would
        # not start (the manager ignores a start while the old actor still runs).
        self._nursery.start_soon(self._stop_fenced, slot)

    async def _stop_fenced(self, slot: Slot) -> None:
        try:
            await self.partitions.stop(slot, grace=0.0)
        finally:
            self.wake()

    async def _heartbeat(self, leave: bool = False) -> list[str]:
        rt = self.worker
        info: list[Any] = [
            "host", rt.host, "pid", rt.pid, "started", rt.started_wall_ms, "version", __version__,
        ]
        members, expired, incarnation = await rt.client.evalsha(
            _scripts.HEARTBEAT,
            [_keys.members_key(rt.app), _keys.worker_key(rt.app, rt.worker_id),
             _keys.incarnation_key(rt.app)],
            [rt.worker_id, int(self.timing.member_timeout * 1000),
             # A fresh offer each time: after a loss the token is new whoever sets it.
             "leave" if leave else "beat", uuid.uuid4().hex, *info],
        )
        if not leave:
            self._check_incarnation(incarnation)
        for gone in expired:
            # Exactly one member's heartbeat removes it: one report, as soon as it is known.
            rt.report("lost", f"worker {gone.decode()} missed its heartbeats for "
                      f"{self.timing.member_timeout:g}s: gone from the membership; its "
                      "partitions are taken over as their leases expire")
        return [m.decode() for m in members]

    def _check_incarnation(self, token: bytes | None) -> None:
        """The app's incarnation token never expires: a new one means Redis lost our data
        (however long it was away). Every worker says so once."""
        state = self.state
        if token is None:  # not set (or vanished) because Redis refused the write (OOM)
            return
        seen, state.incarnation = state.incarnation, token
        if seen is not None and seen != token:
            self.worker.redis.data_lost(
                "the app's keys vanished (membership, leases, epochs): they are recreated, "
                "with epochs raised where this worker knew them, and consumer groups anew"
            )

    async def step(self) -> None:
        rt = self.worker
        state = self.state
        try:
            members = await self._heartbeat()
        except OutOfMemoryError as exc:
            # Under maxmemory the heartbeat's ZADD is refused, but renewals (PEXPIRE) still
            # work: keep the last membership view and renew, rather than self-fence everything.
            if not state.members:
                raise
            state.last_error = f"heartbeat refused: {exc}"
            members = list(state.members)
        state.members = tuple(members)
        slots = self.slots
        replies = await rt.client.pipeline([("GET", self._lease_keys[s]) for s in slots])
        owners: dict[Slot, str] = {}
        for slot, reply in zip(slots, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            if reply is not None:
                owners[slot] = reply.decode()
        state.owners = owners
        now = trio.current_time()
        plan = plan_step(rt.worker_id, members, slots, owners, state.leases, now)
        for slot in plan.fence:
            if slot in state.draining:
                continue
            self._drop(slot, "lease lost (expired or taken over)")
        if plan.renew:
            await self._renew([s for s in plan.renew if s in state.leases])
        for slot in plan.release:
            if slot not in state.draining and slot in state.leases:
                state.draining.add(slot)
                self._nursery.start_soon(self._drain_and_release, slot)
        # An actor of an earlier lease that is still stopping (fenced, or returned after a
        # FENCED reply) blocks re-acquiring its slot until it is gone; we are woken then.
        acquire = [s for s in plan.acquire if s in state.leases or not self.partitions.running(s)]
        if acquire:
            await self._acquire(acquire)

    async def _renew(self, slots: list[Slot]) -> None:
        ttl_ms = int(self.timing.ttl * 1000)
        calls: list[tuple[list[Arg], list[Arg]]] = [
            (
                [self._lease_keys[s], self._epoch_keys[s]],
                [self.worker.worker_id, self.state.leases[s].epoch, ttl_ms],
            )
            for s in slots
        ]
        # Taken before sending: a retried (NOSCRIPT) call ran later, so this stays conservative.
        sent_at = trio.current_time()
        replies = await self.worker.client.evalsha_many(_scripts.RENEW, calls)
        for slot, reply in zip(slots, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            lease = self.state.leases.get(slot)
            if lease is None:
                continue
            if reply == 1:
                lease = lease.renewed(sent_at)
                self.state.leases[slot] = lease
                fence = self.state.fences.get(slot)
                if fence is not None:
                    fence.deadline = lease.self_fence_deadline
            else:
                self._drop(slot, "renewal refused: another worker holds the lease")

    async def _acquire(self, slots: list[Slot]) -> None:
        rt = self.worker
        ttl_ms = int(self.timing.ttl * 1000)
        seen = self.state.max_epoch
        calls: list[tuple[list[Arg], list[Arg]]] = [
            (
                [self._lease_keys[s], self._epoch_keys[s]],
                [rt.worker_id, ttl_ms, seen.get(s, 0)],
            )
            for s in slots
        ]
        sent_at = trio.current_time()
        replies = await rt.client.evalsha_many(_scripts.ACQUIRE, calls)
        acquired = 0
        regressed: list[str] = []
        for slot, reply in zip(slots, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            epoch = int(reply[0])
            if epoch <= 0:
                continue
            if len(reply) > 2:
                msg = (
                    f"{slot.actor}[{slot.partition}]: epoch went back below "
                    f"{seen.get(slot, 0)} (Redis lost data: failover or restart without "
                    f"persistence); raised to {epoch} so stale holders stay fenced"
                )
                regressed.append(f"{slot.actor}[{slot.partition}]")
                rt.report("epoch-regression", msg)
            seen[slot] = max(seen.get(slot, 0), epoch)
            lease = Lease(epoch=epoch, acquired_at=sent_at, timing=self.timing)
            self.state.leases[slot] = lease
            old = self.state.fences.get(slot)
            if old is not None and old.epoch == epoch:
                old.deadline = lease.self_fence_deadline
                if self.partitions.running(slot):
                    continue
            fence = Fence(epoch, lease.self_fence_deadline)
            self.state.fences[slot] = fence
            self.partitions.start(slot, fence)
            acquired += 1
        if regressed:
            rt.redis.data_lost(
                f"the fencing epochs of {', '.join(regressed)} went back; raised so stale "
                "holders stay fenced (consumer groups are recreated as partitions start)"
            )
        if acquired:
            self._note_rebalance(f"acquired {acquired} partition(s)")

    def _note_rebalance(self, what: str) -> None:
        self.state.rebalances += 1
        self.state.last_rebalance_at = trio.current_time()
        self.worker.report("rebalance", what)

    async def _drain_and_release(self, slot: Slot) -> None:
        try:
            await self.partitions.stop(slot, grace=self.worker.settings.shutdown_grace)
            await self._release(slot)
            self._note_rebalance(f"released {slot.actor}[{slot.partition}]")
        finally:
            self.state.draining.discard(slot)
            self.wake()

    async def _release(self, slot: Slot) -> None:
        lease = self.state.leases.pop(slot, None)
        self.state.fences.pop(slot, None)
        if lease is None:
            return
        with trio.move_on_after(2.0) as scope:
            scope.shield = True
            try:
                await self.worker.client.evalsha(
                    _scripts.RELEASE,
                    [self._lease_keys[slot], self._epoch_keys[slot]],
                    [self.worker.worker_id, lease.epoch],
                )
            except TRANSIENT_REDIS_ERRORS as exc:
                log.warning("could not release %s (it will expire): %s", slot, exc)

    async def leave(self) -> None:
        """Graceful leave: drain every partition actor, release leases, leave membership."""
        await self.partitions.stop_all(grace=self.worker.settings.shutdown_grace)
        held = list(self.state.leases)
        for slot in held:
            await self._release(slot)
        if held:
            self.worker.report("released", f"released {len(held)} partition(s) on stop")
        with trio.move_on_after(2.0) as scope:
            scope.shield = True
            try:
                await self._heartbeat(leave=True)
                self.worker.report("left", "left the membership (graceful stop)")
            except TRANSIENT_REDIS_ERRORS as exc:
                log.warning("could not leave the membership (it will time out): %s", exc)

    def statistics(self) -> CoordinatorStatistics:
        s = self.state
        return CoordinatorStatistics(
            worker_id=self.worker.worker_id,
            members=s.members,
            owned=len(s.leases),
            unowned=sum(1 for slot in self.slots if slot not in s.owners),
            draining=len(s.draining),
            rebalances=s.rebalances,
            last_rebalance_at=s.last_rebalance_at,
            last_error=s.last_error,
            t_own=self.timing.t_own(),
        )
