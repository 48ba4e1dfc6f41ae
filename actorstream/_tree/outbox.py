"""Forwarding a partition's outbox to its target streams (exactly-once on a Redis Cluster).

What is forwarded and how replies are read is decided in ``_core.outbox``; this module carries
it out beside the partition actor's loop: a task woken after each commit that put entries in
the outbox (and at the start of every session, so what a previous owner or a crash left is
forwarded by whoever holds the lease now). One cycle is a round trip to the partition's node
(trim what the previous cycle forwarded, read the next entries, the outbox length) and one
batch of ``forward`` script calls (one per target stream; one round trip per node, or, with
``wait_replicas``, one transaction per target followed by WAIT: the outbox is trimmed only once
the targets' replicas acknowledged the forwarded entries, else they are forwarded again later,
which the forward marks make harmless).

The forwarder uses the worker's pooled client, not the partition's own connection (that one
WATCHes the epoch for the read loop). A Redis error waits with backoff and tries again: the
outbox holds the entries meanwhile, and commits go on. A FENCED reply (a newer owner's mark)
ends the partition's session like a fenced commit.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from attrs import define, field
from redis import exceptions as rex

from .._core import keys
from .._core import outbox as plans
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.fence import Fence
from .._core.outbox import ForwardPlan, ForwardResult, Replication
from .._transport import Client
from . import scripts
from .context import Report
from .counters import Counters

__all__ = ["READ_COUNT", "Forwarder", "beside"]

log = logging.getLogger("actorstream.partition")

#: Outbox entries read (and forwarded) per cycle.
READ_COUNT = 1000
#: Without a wake-up, look at the outbox this often (a failed forward is retried sooner).
IDLE_CHECK = 2.0


@define(eq=False)
class Forwarder:
    """Forwards the outbox of one (actor, partition) for one lease epoch.

    With ``wait``: ``replication`` counts the commits the replicas acknowledged (their WAIT rode
    with them), and ``replicated`` is a bare WAIT on the partition's own connection for when
    that is not enough yet."""

    client: Client
    app: str
    stream: str
    partition: int
    actor: str
    fence: Fence
    counters: Counters
    report: Report
    wait: tuple[int, int] | None = None
    replicated: Callable[[], Awaitable[int]] | None = None
    replication: Replication | None = None
    #: A fatal error of ``run``, re-raised by ``beside``.
    failure: Exception | None = field(default=None, init=False)
    _wake: trio.Event = field(factory=trio.Event, init=False)
    _trim_at: str | None = field(default=None, init=False)
    _rng: random.Random = field(factory=random.Random, init=False)
    _waiting: bool = field(default=False, init=False)  # a streak of waits is reported once

    @property
    def key(self) -> str:
        return keys.outbox_key(self.app, self.stream, self.partition, self.actor)

    @property
    def source(self) -> str:
        return f"{self.stream}:{self.partition}:{self.actor}"

    @property
    def label(self) -> str:
        return f"{self.actor}[{self.partition}]"

    def wake(self) -> None:
        """A commit put entries in the outbox."""
        self._wake.set()

    async def run(self, scope: trio.CancelScope) -> None:
        """Forward until cancelled; a fatal error is kept in ``failure`` and ``scope`` cancelled
        (the session re-raises it outside its nursery, unwrapped)."""
        delay = 0.05
        try:
            while True:
                self._wake = trio.Event()
                try:
                    await self.forward_all()
                    delay = 0.05
                    wait = IDLE_CHECK
                    self._waiting = False
                except (NotReplicated, *TRANSIENT_REDIS_ERRORS) as exc:
                    self._note(exc)
                    wait = delay * (0.5 + self._rng.random())
                    delay = min(delay * 2, 2.0)
                with trio.move_on_after(wait):
                    await self._wake.wait()
        except Exception as exc:
            self.failure = exc
            scope.cancel()

    async def drain(self, seconds: float = 5.0) -> None:
        """At a graceful stop: forward what is left, for up to ``seconds`` (what remains is
        forwarded by the next owner)."""
        with trio.move_on_after(seconds) as scope:
            scope.shield = True
            try:
                await self.forward_all()
            except (NotReplicated, rex.RedisError, *TRANSIENT_REDIS_ERRORS) as exc:
                log.info("%s: outbox not drained at stop: %s", self.label, describe_error(exc))

    async def forward_all(self) -> None:
        """Cycles until the outbox is empty (or a target refused: tried again later)."""
        while True:
            self.fence.check(trio.current_time())
            raw = await self._read()
            if not raw:
                return
            if self.replication is not None:
                await self._check_replicated(self.replication, self.replication.sent)
            plan = plans.plan_forward(raw, self.source, self.fence.epoch)
            result = await self._forward(plan)
            self.counters.forwarded += result.appended
            if isinstance(result.error, NotReplicated):
                raise result.error
            if result.error is not None:
                raise rex.ConnectionError(
                    f"{self.label}: forward to {', '.join(result.failed)} failed: "
                    f"{describe_error(result.error)}"
                ) from result.error
            assert plan.last is not None
            self._trim_at = plans.after(plan.last)

    async def _check_replicated(self, replication: Replication, upto: int) -> None:
        """With ``wait_replicas``: forward only entries the source's replicas have (written by
        commits up to ``upto``). Otherwise a failover that lost their commit would have their
        event handled again and its outputs forwarded twice."""
        if replication.covers(upto) or self.wait is None or self.replicated is None:
            return
        replicas = self.wait[0]
        acknowledged = await self.replicated()
        if acknowledged < replicas:
            raise NotReplicated(
                f"{self.label}: outbox entries acknowledged by {acknowledged} of {replicas} "
                "replicas; forwarding waits"
            )

    async def _read(self) -> list[Any]:
        """Trim what was forwarded, read the next entries and the length left, in one trip."""
        commands: list[tuple[Any, ...]] = []
        if self._trim_at is not None:
            commands.append(("XTRIM", self.key, "MINID", self._trim_at))
        commands += [("XRANGE", self.key, "-", "+", "COUNT", READ_COUNT), ("XLEN", self.key)]
        replies = await self.client.pipeline(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self._trim_at = None
        raw: list[Any] = replies[-2]
        self.counters.outbox = int(replies[-1])
        return raw

    async def _forward(self, plan: ForwardPlan) -> ForwardResult:
        if not plan.calls:
            return ForwardResult(0, 0, [], None)
        if self.wait is None:
            replies = await self.client.evalsha_many(
                scripts.FORWARD, [(call.keys, call.args) for call in plan.calls]
            )
        else:
            replies = [None] * len(plan.calls)
            async with trio.open_nursery() as nursery:
                for i in range(len(plan.calls)):
                    nursery.start_soon(self._forward_waited, plan, i, replies)
        return plans.on_forward(plan, replies)

    async def _forward_waited(self, plan: ForwardPlan, i: int, replies: list[Any]) -> None:
        """One target's call in a transaction, then WAIT on that connection (the replicas of
        the target's node acknowledge the entries before the outbox is trimmed)."""
        assert self.wait is not None
        replicas, timeout_ms = self.wait
        call = plan.calls[i]
        command = tuple(scripts.FORWARD.command(call.keys, call.args))
        for _attempt in range(2):
            try:
                out = await self.client.pipeline(
                    [("MULTI",), command, ("EXEC",), ("WAIT", replicas, timeout_ms)],
                    timeout=timeout_ms / 1000 + 10.0,
                )
            except TRANSIENT_REDIS_ERRORS as exc:
                replies[i] = exc
                return
            executed, waited = out[2], out[3]
            reply = executed[0] if isinstance(executed, list) else executed
            if isinstance(reply, rex.NoScriptError):  # it did not run: load, then again
                await self.client.execute("SCRIPT", "LOAD", scripts.FORWARD.source)
                continue
            if not isinstance(reply, Exception) and not (
                isinstance(waited, int) and waited >= replicas
            ):  # appended, not yet durable: kept in the outbox, forwarded again (idempotent)
                reply = NotReplicated(
                    f"{self.label}: a forward to {call.target} was acknowledged by "
                    f"{waited!r:.80} of {replicas} replicas; kept in the outbox"
                )
            replies[i] = reply
            return
        replies[i] = rex.NoScriptError("forward script not loaded")

    def _note(self, exc: Exception) -> None:
        """A forward that has to wait: counted; reported once per streak."""
        self.counters.redis_errors[type(exc).__name__] += 1
        if not self._waiting:
            self._waiting = True
            kind = "wait-replicas" if isinstance(exc, NotReplicated) else "outbox-waits"
            self.report(kind, describe_error(exc))
        log.info("%s: outbox forward waits: %s", self.label, describe_error(exc))


class NotReplicated(Exception):
    """Outbox entries not yet acknowledged by ``wait_replicas`` replicas: forwarded later."""


async def beside(forwarder: Forwarder | None, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` with the forwarder beside it (if any). Errors of either come out as
    themselves, not wrapped in an ExceptionGroup (the partition actor sorts them by type)."""
    if forwarder is None:
        await body()
        return
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forwarder.run, nursery.cancel_scope)
        try:
            await body()
        except Exception as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if forwarder.failure is not None:
        raise forwarder.failure

