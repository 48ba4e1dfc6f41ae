"""Pure, I/O-free partition assignment and the coordinator's per-step plan.

``assign`` decides who *should* own every (actor, partition) slot; ``plan_step`` turns that target
and one worker's view of Redis into the actions this worker takes now. The coordinator actor only
carries plans out (heartbeat, scripts) and feeds the results back; all decisions are made here, so
they can be tested exhaustively (``tests/unit/test_rebalance_model.py``) without Redis.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

import attrs
from attrs import frozen

from .leasetiming import Lease

__all__ = ["Plan", "Slot", "assign", "min_moves", "moves", "plan_step"]


class Slot(NamedTuple):
    """One partition of one actor: the unit of ownership, leasing and fencing."""

    actor: str
    partition: int

    def __str__(self) -> str:
        return f"{self.actor}[{self.partition}]"


def _group(slots: Collection[Slot]) -> dict[str, list[Slot]]:
    by_actor: dict[str, list[Slot]] = {}
    for slot in set(slots):
        by_actor.setdefault(slot.actor, []).append(slot)
    for group in by_actor.values():
        group.sort()
    return by_actor


def assign(
    members: Collection[str], slots: Collection[Slot], current: Mapping[Slot, str]
) -> dict[Slot, str]:
    """The target owner of every slot: balanced per actor, sticky, deterministic.

    Per actor with ``n`` slots and ``m`` members, every member gets ``n // m`` slots and
    ``n % m`` of them one extra. The extras go first to members that already hold more than
    ``n // m`` of that actor's slots (so nothing moves that need not: the result moves the
    minimum number of slots, see ``min_moves``), then to the members with the fewest slots so
    far across the actors already placed (actors are placed in sorted order), so totals across
    actors stay even too. A member over its quota keeps its lowest partitions; freed and
    unowned slots fill the members under quota in sorted order. Owners in ``current`` that are
    not members, and slots that are not in ``slots``, are ignored.

    Stickiness wins over the total: a newcomer gets exactly ``n // m`` of every actor (taking
    more would move more than the minimum), so totals even out only as members come and go.

    Applying ``assign`` to its own result changes nothing (the result is a fixed point), and the
    result depends only on the *sets* given, never on iteration order.
    """
    ordered = sorted(set(members))
    if not ordered:
        return {}
    member_set = set(ordered)
    totals = dict.fromkeys(ordered, 0)
    result: dict[Slot, str] = {}
    for _actor, group in sorted(_group(slots).items()):
        base, extras = divmod(len(group), len(ordered))
        held: dict[str, list[Slot]] = {member: [] for member in ordered}
        free: list[Slot] = []
        for slot in group:
            owner = current.get(slot)
            if owner is not None and owner in member_set:
                held[owner].append(slot)
            else:
                free.append(slot)
        # Extras: sticky candidates first, then the least loaded so far, then by name.
        by_claim = sorted(ordered, key=lambda m: (len(held[m]) <= base, totals[m], m))
        lucky = set(by_claim[:extras])
        deficits: list[str] = []
        for member in ordered:
            quota = base + (member in lucky)
            totals[member] += quota
            mine = held[member]
            for slot in mine[:quota]:
                result[slot] = member
            free.extend(mine[quota:])
            deficits.extend([member] * (quota - min(len(mine), quota)))
        free.sort()
        for slot, member in zip(free, deficits, strict=True):
            result[slot] = member
    return result


def moves(
    old: Mapping[Slot, str], new: Mapping[Slot, str]
) -> dict[Slot, tuple[str | None, str | None]]:
    """Slots whose owner differs between two assignments, as ``slot -> (old, new)``.

    A slot present in only one of them counts, with ``None`` on the other side.
    """
    return {
        slot: (old.get(slot), new.get(slot))
        for slot in sorted(set(old) | set(new))
        if old.get(slot) != new.get(slot)
    }


def min_moves(
    members: Collection[str], slots: Collection[Slot], current: Mapping[Slot, str]
) -> int:
    """The fewest slots any per-actor-balanced assignment must give a new owner.

    A slot "moves" when its new owner differs from ``current`` (an unowned slot, or one owned
    by a non-member, always moves). Per actor, member ``i`` currently holding ``c_i`` slots can
    keep at most ``min(c_i, quota_i)``; the ``n % m`` extra quota places keep one more slot each
    only when given to members holding more than ``n // m``. Used by tests and the benchmark.
    """
    member_set = set(members)
    if not member_set:
        return 0
    total = 0
    for group in _group(slots).values():
        base, extras = divmod(len(group), len(member_set))
        counts = dict.fromkeys(member_set, 0)
        for slot in group:
            owner = current.get(slot)
            if owner is not None and owner in member_set:
                counts[owner] += 1
        kept = sum(min(c, base) for c in counts.values())
        kept += min(extras, sum(1 for c in counts.values() if c > base))
        total += len(group) - kept
    return total


@frozen
class Plan:
    """What one coordinator does in one step, in this order.

    ``fence``: leases to drop at once (trust expired, or Redis shows another/no owner): stop
        their partition actors without any further side effect.
    ``release``: leases assigned elsewhere: drain the partition actor (finish and ack in-flight
        events), then release the lease (compare-and-set on owner and epoch). A drain can span
        several steps; the slot stays in ``release`` (and in ``renew`` when due) until released.
    ``renew``: held leases whose renewal is due (compare-and-set on owner and epoch); on success
        ``Lease.renewed(sent_at)``, on failure treat as fenced.
    ``acquire``: slots assigned to this worker that are free in Redis (or still carry this
        worker's own stale lease); acquiring increments the epoch.
    ``target``: the full assignment this plan follows, for statistics.
    """

    fence: tuple[Slot, ...] = ()
    release: tuple[Slot, ...] = ()
    renew: tuple[Slot, ...] = ()
    acquire: tuple[Slot, ...] = ()
    target: Mapping[Slot, str] = attrs.field(factory=dict, hash=False, repr=False)

    @property
    def idle(self) -> bool:
        """Nothing to change this step (renewals aside): the ownership has converged."""
        return not (self.fence or self.release or self.acquire)


def plan_step(
    my_id: str,
    members: Collection[str],
    slots: Collection[Slot],
    owners_view: Mapping[Slot, str],
    my_leases: Mapping[Slot, Lease],
    now: float,
) -> Plan:
    """One coordinator step for worker ``my_id`` at local monotonic time ``now``.

    ``members``: live members read from Redis (``my_id`` is added: a running coordinator is a
    member by definition, having just heartbeated). ``owners_view``: slot -> current holder of an
    unexpired lease in Redis, read *after* the last change to ``my_leases``. ``my_leases``: the
    leases this worker holds and still trusts.

    A slot is only acquired when Redis shows it free, so a moving partition is always released
    (drained) by its old owner, or its lease has expired, before the new owner takes it.
    """
    target = assign(set(members) | {my_id}, slots, owners_view)
    fence = sorted(
        slot
        for slot, lease in my_leases.items()
        if lease.must_self_fence(now) or owners_view.get(slot) != my_id
    )
    fenced = set(fence)
    release = sorted(slot for slot in my_leases if slot not in fenced and target.get(slot) != my_id)
    renew = sorted(
        slot for slot, lease in my_leases.items() if slot not in fenced and lease.renew_due(now)
    )
    acquire = sorted(
        slot
        for slot, owner in target.items()
        if owner == my_id
        and (slot not in my_leases or slot in fenced)
        and owners_view.get(slot, my_id) == my_id
    )
    return Plan(
        fence=tuple(fence),
        release=tuple(release),
        renew=tuple(renew),
        acquire=tuple(acquire),
        target=target,
    )
