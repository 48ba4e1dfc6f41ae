"""Cluster pipelines: commands grouped per node, one round trip per node, replies in order.

A pipeline holding WATCH/MULTI runs as a whole on the one node of its slot and is sent again
only when its replies prove nothing ran (see ``_proven_not_run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from redis import exceptions as rex

from ._connection import Command
from ._errors import UnblockedError
from ._slots import arg_text, command_slot, is_transaction
from ._topology import REDIRECTS, RETRYABLE, Addr, Budget, NotSent, Topology


async def pipeline(
    router: Topology, commands: Sequence[Command], timeout: float | None
) -> list[Any]:
    """Commands grouped per node, one round trip per node, replies in the callers' order."""
    if router.stale:
        await router.refresh_quietly()
    if is_transaction(commands):
        return await _transaction(router, commands, timeout)
    slots = [command_slot(c) for c in commands]
    anywhere = next((s for s in slots if s is not None), None)
    replies: list[Any] = [None] * len(commands)
    pending = list(range(len(commands)))
    asks: dict[int, Addr] = {}
    budget = Budget(router)
    while pending:
        groups, unrouted = _group(router, pending, slots, anywhere, asks)
        asked = set(asks)
        asks = {}
        outcomes = await _send_groups(router, groups, asked, commands, timeout)
        again = unrouted
        reason: Exception | None = (
            rex.ClusterDownError("CLUSTERDOWN slot unassigned") if unrouted else None
        )
        reason = _absorb(router, budget, groups, outcomes, replies, asks, again) or reason
        pending = sorted(again)
        if pending and reason is not None:
            try:
                await budget.backoff(reason)
            except RETRYABLE:
                return replies  # out of time: the refusals stay in place
    return replies


def _group(
    router: Topology,
    pending: list[int],
    slots: list[int | None],
    anywhere: int | None,
    asks: dict[int, Addr],
) -> tuple[dict[Addr, list[int]], list[int]]:
    """The pending commands per node (ASK targets first), and those no node serves now."""
    groups: dict[Addr, list[int]] = {}
    unrouted: list[int] = []
    owners = router.map.owners
    for i in pending:
        slot = slots[i]
        addr = asks.get(i) if asks else None
        if addr is None:
            addr = owners[slot] if slot is not None else router.owner_of(anywhere)
        if addr is None:
            unrouted.append(i)
        elif addr in groups:
            groups[addr].append(i)
        else:
            groups[addr] = [i]
    return groups, unrouted


def _absorb(
    router: Topology,
    budget: Budget,
    groups: dict[Addr, list[int]],
    outcomes: dict[Addr, list[Any] | NotSent],
    replies: list[Any],
    asks: dict[int, Addr],
    again: list[int],
) -> Exception | None:
    """Store each node's replies; queue refused commands in ``again`` (ASK targets in ``asks``).

    Returns the latest reason to back off before the next round (None: no reason from replies).
    """
    reason: Exception | None = None
    for addr, indices in groups.items():
        outcome = outcomes[addr]
        if isinstance(outcome, NotSent):
            router.failed(addr)
            again.extend(indices)
            reason = outcome.cause
            continue
        for i, reply in zip(indices, outcome, strict=True):
            replies[i] = reply
            if not isinstance(reply, REDIRECTS):
                continue
            if isinstance(reply, rex.MovedError):
                budget.redirected(reply)
                router.moved(reply)
                again.append(i)
            elif isinstance(reply, rex.AskError):
                budget.redirected(reply)
                asks[i] = (reply.host, reply.port)
                again.append(i)
            elif isinstance(reply, RETRYABLE):
                again.append(i)
                reason = reply
    return reason


async def _send_groups(
    router: Topology,
    groups: dict[Addr, list[int]],
    asked: set[int],
    commands: Sequence[Command],
    timeout: float | None,
) -> dict[Addr, list[Any] | NotSent]:
    outcomes: dict[Addr, list[Any] | NotSent] = {}
    lost: list[Exception] = []

    async def one(addr: Addr, indices: list[int]) -> None:
        batch: Sequence[Command]
        if asked:
            batch = []
            for i in indices:
                if i in asked:
                    batch.append(("ASKING",))
                batch.append(commands[i])
        elif len(indices) == len(commands):
            batch = commands
        else:
            batch = [commands[i] for i in indices]
        pool = router.pool(addr)
        try:
            conn = await router.acquire(pool)
        except NotSent as exc:
            outcomes[addr] = exc
            return
        try:
            raw = await conn.pipeline(batch, timeout=timeout)
            if any(isinstance(r, UnblockedError) for r in raw):
                conn.broken = True  # the server closes it after -UNBLOCKED
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            router.failed(addr)
            lost.append(exc)
            return
        finally:
            pool._release(conn)
        if asked:
            out: list[Any] = []
            j = 0
            for i in indices:
                j += 1 if i in asked else 0
                out.append(raw[j])
                j += 1
            outcomes[addr] = out
        else:
            outcomes[addr] = raw

    if len(groups) == 1:
        [(addr, indices)] = groups.items()
        await one(addr, indices)
    else:
        async with trio.open_nursery() as nursery:
            for addr, indices in groups.items():
                nursery.start_soon(one, addr, indices)
    if lost:
        raise lost[0]  # written and then lost: which commands ran is unknown (never resent)
    return outcomes


async def _transaction(
    router: Topology, commands: Sequence[Command], timeout: float | None
) -> list[Any]:
    """A pipeline with WATCH/MULTI runs on one node as a whole; all its keys in one slot."""
    slot = _one_slot(commands)
    budget = Budget(router)
    while True:
        addr = router.owner_of(slot)
        if addr is None:
            await budget.backoff(rex.ClusterDownError(f"CLUSTERDOWN slot {slot} unassigned"))
            continue
        pool = router.pool(addr)
        try:
            conn = await router.acquire(pool)
        except NotSent as exc:
            router.stale = True
            await budget.backoff(exc.cause)
            continue
        try:
            replies = await conn.pipeline(commands, timeout=timeout)
        except (rex.ConnectionError, rex.TimeoutError):
            router.stale = True
            raise
        finally:
            # WATCH state must not leak to the next borrower of this pooled connection.
            if not conn.broken and any(arg_text(c[0]) == "WATCH" for c in commands):
                conn.broken = True
            pool._release(conn)
        refusal = next((r for r in replies if isinstance(r, REDIRECTS)), None)
        if refusal is None or not _proven_not_run(commands, replies):
            return replies
        if isinstance(refusal, rex.MovedError):
            budget.redirected(refusal)
            router.moved(refusal)
        else:  # ASK inside a transaction: wait for the migration to finish
            await budget.backoff(refusal)


def _one_slot(commands: Sequence[Command]) -> int | None:
    slot: int | None = None
    for command in commands:
        s = command_slot(command)
        if s is None:
            continue
        if slot is not None and s != slot:
            raise rex.ClusterCrossSlotError(
                f"CROSSSLOT a transaction touches slots {slot} and {s}: give its keys one hash tag"
            )
        slot = s
    return slot


def _proven_not_run(commands: Sequence[Command], replies: Sequence[Any]) -> bool:
    """True if no command of the request had an effect: each was refused by a redirect, or
    queued in a MULTI whose EXEC aborted (a queued command was refused), or is MULTI/WATCH."""
    in_multi = False
    for command, reply in zip(commands, replies, strict=True):
        name = arg_text(command[0])
        if name == "MULTI":
            in_multi = True
        elif name == "EXEC":
            in_multi = False
            if not isinstance(reply, rex.ExecAbortError):
                return False
        elif in_multi:
            if not (reply in (b"QUEUED", "QUEUED") or isinstance(reply, REDIRECTS)):
                return False
        elif name != "WATCH" and not isinstance(reply, REDIRECTS):
            return False
    return not in_multi
