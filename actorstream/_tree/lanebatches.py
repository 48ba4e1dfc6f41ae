"""The batch form's workers with ``ordering="key"`` or ``"none"`` (a part of ``lanes.LaneLoop``).

A worker starts one batch at a time (``Dispatch.start``: up to ``batch_size`` entries, with
``"key"`` no key in two batches in flight), hands it to the handler in one call (``handle_batch``:
a failed batch is handled again one event at a time) and commits the ids it returned for, with
the next read.

``batch_wait``: a batch that is not full *fills* (the rule holds it back, with its keys, until
it is full or due; ``Dispatch.fill_deadline``). One worker at a time, the *filler*, waits for it:
until its deadline, or until it is woken by what may change the answer (entries arrived, a batch
finished and freed its keys, an outage or a stop began), and asks the rule again. A stop or an
outage starts nothing new: the filler leaves at once, and the entries of a batch that filled but
never started stay pending (the next owner replays them first). A lost lease cancels the filler
with everything else (the fence watcher).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .._core.dispatch import Dispatch
from .batches import handle_batch

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .counters import Counters
    from .handling import Handling
    from .reader import Reader

__all__ = ["BatchWorkers"]


class BatchWorkers:
    """The batch form's side of ``LaneLoop`` (which sets the state below and runs the rest)."""

    dispatch: Dispatch
    handling: Handling
    reader: Reader
    counters: Counters
    _spare: int
    _filler: bool  # a worker waits for the batch that fills
    _fill_wake: trio.Event  # set to wake it

    if TYPE_CHECKING:  # the loop's own (``lanes.LaneLoop``)

        def _spawn(self, work: Callable[[], Awaitable[None]]) -> None: ...
        def _sync_pause(self) -> None: ...
        def _retired(self, in_flight: int) -> None: ...
        def _fail(self, exc: Exception) -> None: ...
        def _maybe_wake(self) -> None: ...

    def _kick_batches(self) -> None:
        """Something may start (or a batch fills): wake the filler if one waits, else start
        a worker if none is spare."""
        dispatch = self.dispatch
        if dispatch.paused:
            return
        if dispatch.fill_deadline is not None:
            if self._filler:
                self._fill_wake.set()
                return
        elif not dispatch.startable():
            return
        if not self._spare:
            self._spawn(self._work_batches)

    def _wake_filler(self) -> None:
        if self._filler:
            self._fill_wake.set()

    async def _work_batches(self) -> None:
        """A worker of the batch form: one batch per handler call, until none may start (or
        it waited for a batch to fill, and another worker took it)."""
        self._spare -= 1
        dispatch = self.dispatch
        handling = self.handling
        reader = self.reader
        stopping = reader.ctx.stop_event.is_set
        try:
            while not stopping():
                self._sync_pause()
                start = dispatch.start(trio.current_time())
                if start is None:
                    if await self._fill():
                        continue
                    return
                self._kick_batches()
                self.counters.in_flight = dispatch.in_flight
                handling.fence.check(trio.current_time())
                items = [(entry_id, fields, event) for entry_id, _, event, fields in start.entries]
                acks = await handle_batch(handling, reader.conn, reader.ctx, items)
                reader.commit(dispatch.finish(start.token, acks))
                self._wake_filler()  # its keys are free: their waiting entries may join
                self._maybe_wake()
        except Exception as exc:
            self._fail(exc)
        finally:
            self._retired(dispatch.in_flight)

    async def _fill(self) -> bool:
        """A batch fills: wait for it, as the filler, until it is due or something may change
        it; False if there is nothing to wait for (none fills, another worker waits for it,
        or an outage or a stop started nothing new)."""
        dispatch = self.dispatch
        due = dispatch.fill_deadline
        if due is None or self._filler or dispatch.paused:
            return False
        self._filler = True
        self._fill_wake = trio.Event()
        try:
            with trio.move_on_at(due):
                await self._fill_wake.wait()
        finally:
            self._filler = False
        return True
