"""The dead-letter branch: one supervised actor per worker that moves poison events.

A partition actor hands a poison event (with its lease epoch, inside ``Poison``) over a trio
memory channel and waits for the answer, so nothing is acked before the dead letter exists. The
move is one fenced Lua script (``_core.protocol.PartitionProtocol.plan_dead_letter``: write the
dead-letter entry, remember original id -> dead-letter id, XACK the source): atomic and
idempotent, so a retried move never makes a second entry and a zombie cannot move anything. If
it fails (OOM under maxmemory, READONLY, FENCED), nothing is acked: the error goes back to the
partition actor, the event stays pending and the actor backs off with the error visible.

The actor also owns dead-letter retention: with ``dead_letter_maxlen`` it trims a partition's
dead-letter stream after each move, together with the index entries of what it removed, and it
sweeps away index entries whose dead letter is gone (left by older versions' MAXLEN trimming or
by an operator's XTRIM/XDEL) once at start and every ``SWEEP_INTERVAL`` seconds.

The entry format is ``actorstream._core.deadletter``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import trio
from attrs import field, frozen
from redis import exceptions as rex

from .._core import keys
from .._core.classify import TRANSIENT_REDIS_ERRORS
from .._core.crashes import describe_error
from .._core.deadletter import GivenUp
from .._core.fence import Fence
from .._core.policy import RestartPolicy
from .._core.protocol import PartitionProtocol
from .._transport import Script
from . import scripts
from .context import WorkerContext
from .supervisor import ChildContext, Restart, Strategy, Supervisor

__all__ = ["SWEEP_INTERVAL", "DeadLetters", "Poison"]

log = logging.getLogger("actorstream.deadletters")

SWEEP_INTERVAL = 600.0
TRIM_STEP = 1000
SWEEP_STEP = 500


@frozen
class Poison:
    """One event a partition actor gives up on, with what the move needs (its epoch included)."""

    protocol: PartitionProtocol
    fence: Fence
    given_up: GivenUp


@frozen(eq=False)
class _Request:
    poison: Poison
    done: trio.Event = field(factory=trio.Event)
    #: The dead-letter id, or the error to raise in the partition actor; set before ``done``.
    outcome: list[bytes | Exception] = field(factory=list)


class DeadLetters:
    """The dead-letter actor of one worker (``run_branch``) and its mailbox (``move``).

    ``streams`` are the ``(stream name, partitions)`` whose dead-letter indexes it sweeps.
    """

    def __init__(self, worker: WorkerContext, streams: Sequence[tuple[str, int]] = ()) -> None:
        self.worker = worker
        self.maxlen = worker.settings.dead_letter_maxlen
        self.streams = tuple(streams)
        self.moved = 0
        self.swept = 0
        self._send, self._receive = trio.open_memory_channel[_Request](math.inf)

    async def move(self, poison: Poison) -> bytes:
        """Ask the actor to move ``poison``; return its dead-letter id once it exists.

        Raises what the move raised (``FencedError``, OOM, READONLY, connection errors): then
        nothing was acked. Unbounded mailbox: each partition actor waits for its answer, so at
        most one request per partition is ever queued.
        """
        poison.fence.check(trio.current_time())
        request = _Request(poison)
        self._send.send_nowait(request)
        await request.done.wait()
        outcome = request.outcome[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    # -- the actor ------------------------------------------------------------------------------

    async def run_branch(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The branch of the root tree: the actor under a supervisor of its own."""
        sup = Supervisor(
            "dead-letters",
            strategy=Strategy.ONE_FOR_ONE,
            policy=RestartPolicy(max_restarts=5, within=60.0),
        )
        sup.start_child("dead-letters", self.run, restart=Restart.PERMANENT)
        await sup.run(task_status=task_status)

    async def run(self, ctx: ChildContext) -> None:
        """Serve moves in arrival order; sweep the indexes now and then between them."""
        next_sweep = trio.current_time()
        while True:
            request: _Request | None = None
            with trio.move_on_at(next_sweep):
                request = await self._receive.receive()
            if request is None:
                await self._sweep_all()
                next_sweep = trio.current_time() + SWEEP_INTERVAL
                continue
            await self._serve(request)

    async def _serve(self, request: _Request) -> None:
        poison = request.poison
        try:
            request.outcome.append(await self._move(poison))
        except Exception as exc:  # the partition actor decides; this actor carries on
            request.outcome.append(exc)
        finally:
            if not request.outcome:  # cancelled mid-move: it may or may not have happened
                request.outcome.append(
                    rex.ConnectionError("the dead-letter actor stopped during the move")
                )
            request.done.set()
        if self.maxlen and not isinstance(request.outcome[0], Exception):
            await self._trim(poison.protocol)

    async def _move(self, poison: Poison) -> bytes:
        poison.fence.check(trio.current_time())  # not before our lease could have lapsed
        protocol = poison.protocol
        given_up = poison.given_up
        call = protocol.plan_dead_letter(
            given_up, worker=self.worker.worker_id, time_ms=int(time.time() * 1000)
        )
        dlq_id: bytes = await self.worker.client.evalsha(scripts.DEADLETTER, call.keys, call.args)
        self.moved += 1
        self.worker.report(
            "dead-letter",
            f"{protocol.label} {given_up.entry_id.decode()}: {given_up.kind}: "
            f"{given_up.message}"[:300],
        )
        return dlq_id

    # -- retention ------------------------------------------------------------------------------

    def _dlq_keys(self, stream: str, partition: int) -> list[str]:
        app = self.worker.app
        return [keys.dlq_key(app, stream, partition), keys.dlq_index_key(app, stream, partition)]

    async def _trim(self, protocol: PartitionProtocol) -> None:
        """Keep the newest ``dead_letter_maxlen`` dead letters of the partition, index included."""
        dlq_keys = self._dlq_keys(protocol.stream, protocol.partition)
        while True:
            removed = await self._call(scripts.DLQ_TRIM, dlq_keys, [self.maxlen, TRIM_STEP], "trim")
            if removed is None or int(removed) < TRIM_STEP:
                return

    async def _sweep_all(self) -> None:
        for stream, partitions in self.streams:
            for p in range(partitions):
                await self._serve_waiting()  # moves first: a partition actor is waiting
                if not await self._sweep(stream, p):
                    return  # Redis unavailable: try again at the next turn

    async def _serve_waiting(self) -> None:
        while True:
            try:
                request = self._receive.receive_nowait()
            except trio.WouldBlock:
                return
            await self._serve(request)

    async def _sweep(self, stream: str, partition: int) -> bool:
        dlq_keys = self._dlq_keys(stream, partition)
        cursor: bytes | str = "0"
        while True:
            reply = await self._call(scripts.DLQ_SWEEP, dlq_keys, [cursor, SWEEP_STEP], "sweep")
            if reply is None:
                return False
            cursor, removed = reply
            self.swept += int(removed)
            if cursor in (b"0", "0"):
                return True

    async def _call(self, script: Script, dlq_keys: list[str], args: list[Any], what: str) -> Any:
        """A retention step; None if Redis is unavailable (retention waits for the next turn)."""
        try:
            return await self.worker.client.evalsha(script, dlq_keys, args)
        except TRANSIENT_REDIS_ERRORS as exc:
            log.warning("dead-letter %s of %s skipped: %s", what, dlq_keys[0],
                        describe_error(exc))
            return None
