"""Pure window arithmetic on event time: assignment, session merging, stream time, closing.

Every time here is an int of milliseconds since the epoch, like Redis entry ids and Kafka
Streams: window bounds are then exact (``60.0 * 1000`` is, ``0.1 + 0.2`` is not), so a window
boundary never depends on float rounding. Event times are rounded to the nearest millisecond.

Windows are half-open, ``[start, end)``. The rules, the same for every kind of window:

- Stream time (per partition) is the highest event time seen so far; it never goes back.
- A window *closes* when stream time reaches ``end + grace``; it is then final, emitted once.
- An event is *late* for a window that is already closed: it is not counted in it.
- A session is the union of the overlapping ``[t, t + gap)`` of its events, so events less than
  ``gap`` apart share a session and an event that bridges two sessions merges them. A session
  event is late when its own ``[t, t + gap)`` has closed or when it would join a closed session;
  a closed session is remembered for ``gap`` more (at least) so that no session emitted later
  for the same key ever overlaps it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Iterator
from datetime import timedelta
from typing import Any, NamedTuple

import attrs
from attrs import field, frozen

from .errors import ConfigError
from .eventtime import entry_id_millis, event_time_millis

__all__ = [
    "Closing",
    "Hopping",
    "Placement",
    "Session",
    "Step",
    "Tumbling",
    "Window",
    "WindowSpec",
    "WindowTracker",
    "entry_id_millis",
    "event_time_millis",
    "to_millis",
]

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _seconds(value: Any) -> Any:
    """Accept a ``timedelta`` wherever a number of seconds is expected."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def _duration(requirement: str, ok: Callable[[int], bool]) -> _Validator:
    """Seconds that are a whole number of milliseconds, with a message naming the field."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        where = f"{type(instance).__name__}.{attribute.name}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"{where} must be a number of seconds (or a timedelta), got {value!r}"
            )
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number of seconds, got {value!r}")
        millis = value * 1000
        if abs(millis - round(millis)) > 1e-6:
            raise ConfigError(f"{where} must be a whole number of milliseconds, got {value!r}")
        if not ok(round(millis)):
            raise ConfigError(f"{where} must be {requirement}, got {value!r}")

    return validate


_POSITIVE = _duration("at least 0.001 (one millisecond)", lambda ms: ms >= 1)
_NOT_NEGATIVE = _duration(">= 0", lambda ms: ms >= 0)


def to_millis(seconds: float) -> int:
    return round(seconds * 1000)


@frozen(order=True)
class Window:
    """One window ``[start, end)``; ``start`` and ``end`` are epoch seconds."""

    start_ms: int
    end_ms: int

    @property
    def start(self) -> float:
        return self.start_ms / 1000

    @property
    def end(self) -> float:
        return self.end_ms / 1000

    def contains(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms

    def overlaps(self, other: Window) -> bool:
        return self.start_ms < other.end_ms and other.start_ms < self.end_ms

    def token(self) -> str:
        """A compact text form for storage, ``"<start_ms>:<end_ms>"``."""
        return f"{self.start_ms}:{self.end_ms}"

    @classmethod
    def from_token(cls, token: str) -> Window:
        start, _, end = token.partition(":")
        return cls(int(start), int(end))

    def __repr__(self) -> str:
        return f"Window(start={self.start!r}, end={self.end!r})"


@frozen
class Tumbling:
    """Fixed-size, non-overlapping windows aligned on the epoch: every event is in exactly one."""

    size: float = field(converter=_seconds, validator=_POSITIVE)
    grace: float = field(default=0.0, converter=_seconds, validator=_NOT_NEGATIVE)

    @property
    def grace_ms(self) -> int:
        return to_millis(self.grace)

    def windows_for(self, t_ms: int) -> tuple[Window, ...]:
        size = to_millis(self.size)
        start = t_ms // size * size
        return (Window(start, start + size),)


@frozen
class Hopping:
    """Windows of ``size`` starting every ``step`` (aligned on the epoch); they overlap when
    ``step < size``, so an event is in ``ceil(size / step)`` windows or one fewer."""

    size: float = field(converter=_seconds, validator=_POSITIVE)
    step: float = field(converter=_seconds, validator=_POSITIVE)
    grace: float = field(default=0.0, converter=_seconds, validator=_NOT_NEGATIVE)

    def __attrs_post_init__(self) -> None:
        if to_millis(self.step) > to_millis(self.size):
            raise ConfigError(
                f"Hopping.step ({self.step!r}) must be <= size ({self.size!r}); "
                "a step longer than the window would leave events in no window"
            )

    @property
    def grace_ms(self) -> int:
        return to_millis(self.grace)

    def windows_for(self, t_ms: int) -> tuple[Window, ...]:
        size, step = to_millis(self.size), to_millis(self.step)
        first = (t_ms - size) // step + 1
        last = t_ms // step
        return tuple(Window(k * step, k * step + size) for k in range(first, last + 1))


@frozen
class Session:
    """Per-key sessions of activity: events less than ``gap`` apart share one session."""

    gap: float = field(converter=_seconds, validator=_POSITIVE)
    grace: float = field(default=0.0, converter=_seconds, validator=_NOT_NEGATIVE)

    @property
    def grace_ms(self) -> int:
        return to_millis(self.grace)

    def windows_for(self, t_ms: int) -> tuple[Window, ...]:
        """The event's own window, before any merge with the key's sessions."""
        return (Window(t_ms, t_ms + to_millis(self.gap)),)


WindowSpec = Tumbling | Hopping | Session


def check_spec(spec: object, where: str) -> WindowSpec:
    if not isinstance(spec, Tumbling | Hopping | Session):
        raise ConfigError(
            f"{where}: window must be Tumbling(size, grace=), Hopping(size, step, grace=) "
            f"or Session(gap, grace=), got {spec!r}"
        )
    return spec


# ---- tracking one table on one partition ----------------------------------------------------


class Closing(NamedTuple):
    """A window that just closed: emit its value once, then it leaves (or stays retained)."""

    key: Hashable
    window: Window


@frozen
class Placement:
    """Where one event goes.

    ``windows``: the open windows it updates (a merged session is a single window).
    ``merged``: the key's sessions that the event's session absorbed; their values merge into
    ``windows[0]`` and they leave the table. ``missed``: its windows that had already closed.
    """

    windows: tuple[Window, ...]
    merged: tuple[Window, ...] = ()
    missed: tuple[Window, ...] = ()

    @property
    def late(self) -> bool:
        """The event missed a window; a late event of a tumbling or session table counts nowhere."""
        return bool(self.missed)


@frozen
class Step:
    """What one event does: the windows it closes (in close order), then where it goes,
    then the closed windows whose retention ended (they leave the table)."""

    closed: tuple[Closing, ...]
    placement: Placement
    expired: tuple[Closing, ...]


class WindowTracker:
    """Stream time and the open and retained windows of one windowed table on one partition.

    Decisions only: the table keeps the values. Feed it every event of the partition in stream
    order (``on_event``), or a wall-clock advance (``advance``); ``restore`` rebuilds it from the
    stored windows and stream time when a partition is (re)acquired.
    """

    def __init__(
        self, spec: WindowSpec, *, retention: float = 0.0, stream_time_ms: int | None = None
    ) -> None:
        self.spec = spec
        self._grace = spec.grace_ms
        retention_ms = to_millis(retention)
        if isinstance(spec, Session):
            retention_ms = max(retention_ms, to_millis(spec.gap))
        self._retention = retention_ms
        self._stream_time = stream_time_ms
        # Sessions: each key's open and closed (remembered) sessions; one heap entry each.
        self._open: dict[Hashable, set[Window]] = {}
        self._closed: dict[Hashable, set[Window]] = {}
        # Time windows: the keys of each open and retained window, by its start; one heap
        # entry per window (``_CLOSE``, then ``_EXPIRE``), whatever its number of keys.
        self._time = not isinstance(spec, Session)
        self._opened: dict[int, tuple[Window, dict[Hashable, None]]] = {}
        self._kept: dict[int, tuple[Window, dict[Hashable, None]]] = {}
        self._heap: list[tuple[int, int, Hashable, Window]] = []
        self._seq = itertools.count()
        size = to_millis(spec.gap if isinstance(spec, Session) else spec.size)
        self._size = size
        self._step = to_millis(spec.step) if isinstance(spec, Hopping) else size
        # The last time-window placement: every event of the same windows gets it until the
        # first of them closes (the windows of an event depend on its time only).
        self._cached: tuple[int, int, int, Placement] | None = None

    @property
    def stream_time_ms(self) -> int | None:
        """The highest event time seen (None before the first event)."""
        return self._stream_time

    def next_due(self) -> int | None:
        """The least stream time at which a window closes or leaves (None: none tracked)."""
        return self._heap[0][0] if self._heap else None

    def open_windows(self, key: Hashable) -> list[Window]:
        if self._time:
            return sorted(w for w, keys in self._opened.values() if key in keys)
        return sorted(self._open.get(key, ()))

    def closed_windows(self, key: Hashable) -> list[Window]:
        if self._time:
            return sorted(w for w, keys in self._kept.values() if key in keys)
        return sorted(self._closed.get(key, ()))

    def __len__(self) -> int:
        if self._time:
            return sum(len(keys) for _w, keys in self._opened.values())
        return sum(len(ws) for ws in self._open.values())

    def is_closed(self, window: Window) -> bool:
        st = self._stream_time
        return st is not None and window.end_ms + self._grace <= st

    def decides_between(self, old: int | None, new: int) -> bool:
        """Whether stream time ``old`` and ``new`` could decide anything differently, so that
        ``new`` must be saved for a restart to decide the same as this run.

        Time windows decide at fixed instants (each window's end + grace, and + retention), so
        a stream time that has crossed none of them need not be saved yet; a session's
        instants depend on its events' times, so any change counts.
        """
        if old is None:
            return True
        if new <= old:
            return False
        if isinstance(self.spec, Session):
            return True
        step, reach = self._step, self._size + self._grace
        if (new - reach) // step != (old - reach) // step:
            return True
        reach += self._retention
        return (new - reach) // step != (old - reach) // step

    def next_decision(self, old: int | None) -> int:
        """The least stream time ``new`` with ``decides_between(old, new)``: per event, one
        comparison tells whether the stream time must be saved."""
        if old is None:
            return -(2**63)
        if isinstance(self.spec, Session):
            return old + 1
        step, reach = self._step, self._size + self._grace
        first = ((old - reach) // step + 1) * step + reach
        reach += self._retention
        return min(first, ((old - reach) // step + 1) * step + reach)

    def restore(self, key: Hashable, window: Window) -> bool:
        """Track a stored window; returns False when its retention ended (delete it)."""
        st = self._stream_time
        if st is not None and window.end_ms + self._grace + self._retention <= st:
            return False
        if not self.is_closed(window):
            self._track(key, window)
        elif self._time:
            kept = self._kept.get(window.start_ms)
            if kept is None:
                kept = self._kept[window.start_ms] = (window, {})
                self._push(window.end_ms + self._grace + self._retention, _EXPIRE, window)
            kept[1][key] = None
        else:
            self._closed.setdefault(key, set()).add(window)
            self._push(window.end_ms + self._grace + self._retention, key, window)
        return True

    def on_event(self, key: Hashable, t_ms: int) -> Step:
        closed, expired = self.advance(t_ms)
        return Step(closed, self._place(key, t_ms), expired)

    # ---- internals ---------------------------------------------------------------------------

    def _push(self, due_ms: int, key: Hashable, window: Window) -> None:
        heapq.heappush(self._heap, (due_ms, next(self._seq), key, window))

    def _track(self, key: Hashable, window: Window) -> None:
        if self._time:
            self.add(key, window)
            return
        self._open.setdefault(key, set()).add(window)
        self._push(window.end_ms + self._grace, key, window)

    def add(self, key: Hashable, window: Window) -> None:
        """Track ``key``'s open time window (``apply`` of one window, for the hot path)."""
        opened = self._opened.get(window.start_ms)
        if opened is None:
            opened = self._opened[window.start_ms] = (window, {})
            self._push(window.end_ms + self._grace, _CLOSE, window)
        opened[1][key] = None

    def advance(self, t_ms: int) -> tuple[tuple[Closing, ...], tuple[Closing, ...]]:
        """Move stream time to ``t_ms`` if later (an event's time, or an idle partition's
        wall clock): the windows that closed and those that leave, (closed, expired)."""
        if self._stream_time is not None and t_ms <= self._stream_time:
            return _NOTHING
        self._stream_time = t_ms
        if not self._heap or self._heap[0][0] > t_ms:
            return _NOTHING  # nothing due: the common case
        closed: list[Closing] = []
        expired: list[Closing] = []
        if self._time:
            self._advance_time(t_ms, closed, expired)
            return tuple(closed), tuple(expired)
        for key, window in self._due(t_ms):
            opened = self._open.get(key)
            if opened is not None and window in opened:
                _discard(self._open, key, window)
                closed.append(Closing(key, window))
                if self._retention > 0:
                    self._closed.setdefault(key, set()).add(window)
                    self._push(window.end_ms + self._grace + self._retention, key, window)
                else:
                    expired.append(Closing(key, window))
            elif window in self._closed.get(key, ()):
                _discard(self._closed, key, window)
                expired.append(Closing(key, window))
        return tuple(closed), tuple(expired)

    def _advance_time(self, t_ms: int, closed: list[Closing], expired: list[Closing]) -> None:
        """``advance`` for time windows: whole windows close (each key of one), then leave
        when their retention ends."""
        for what, window in self._due(t_ms):
            if what is _CLOSE:
                opened = self._opened.pop(window.start_ms, None)
                if opened is None:
                    continue
                keys = opened[1]
                closed.extend([Closing(key, window) for key in keys])
                if self._retention > 0:
                    self._kept[window.start_ms] = opened
                    self._push(window.end_ms + self._grace + self._retention, _EXPIRE, window)
                else:
                    expired.extend([Closing(key, window) for key in keys])
            else:
                kept = self._kept.pop(window.start_ms, None)
                if kept is not None:
                    expired.extend([Closing(key, window) for key in kept[1]])

    def _due(self, st: int) -> Iterator[tuple[Hashable, Window]]:
        heap = self._heap
        while heap and heap[0][0] <= st:
            _due_ms, _seq, key, window = heapq.heappop(heap)
            yield key, window

    def plan(self, key: Hashable, t_ms: int) -> Placement:
        """Where an event of ``key`` at ``t_ms`` goes, at the current stream time; changes
        nothing until ``apply`` (a handler that raises leaves the tracker as it was)."""
        if isinstance(self.spec, Session):
            return self._plan_session(key, t_ms)
        step, size = self._step, self._size
        first, last = (t_ms - size) // step + 1, t_ms // step
        cached = self._cached
        st = self._stream_time
        if (
            cached is not None
            and cached[0] == first
            and cached[1] == last
            and (st is None or st < cached[2])
        ):
            return cached[3]
        fresh: list[Window] = []
        missed: list[Window] = []
        for k in range(first, last + 1):
            window = Window(k * step, k * step + size)
            (missed if self.is_closed(window) else fresh).append(window)
        placement = Placement(tuple(fresh), missed=tuple(missed))
        valid_until = min((w.end_ms + self._grace for w in fresh), default=math.inf)
        self._cached = (first, last, int(min(valid_until, 2**62)), placement)
        return placement

    def apply(self, key: Hashable, placement: Placement) -> None:
        """Track the windows a handled event wrote (a merged session replaces its parts)."""
        if self._time:
            for window in placement.windows:
                self.add(key, window)
            return
        for window in placement.merged:
            _discard(self._open, key, window)
        opened = self._open.get(key, ())
        for window in placement.windows:
            if window not in opened:
                self._track(key, window)

    def _place(self, key: Hashable, t_ms: int) -> Placement:
        placement = self.plan(key, t_ms)
        self.apply(key, placement)
        return placement

    def _plan_session(self, key: Hashable, t_ms: int) -> Placement:
        (own,) = self.spec.windows_for(t_ms)
        if self.is_closed(own):
            return Placement((), missed=(own,))
        joined = [w for w in self._closed.get(key, ()) if w.overlaps(own)]
        if joined:
            return Placement((), missed=tuple(sorted(joined)))
        merged = sorted(w for w in self._open.get(key, ()) if w.overlaps(own))
        start = min([own.start_ms, *(w.start_ms for w in merged)])
        end = max([own.end_ms, *(w.end_ms for w in merged)])
        session = Window(start, end)
        if merged == [session]:
            return Placement((session,))
        return Placement((session,), merged=tuple(merged))


_NOTHING: tuple[tuple[Closing, ...], tuple[Closing, ...]] = ((), ())
#: What a time window's heap entry is due for (in the place of a session's key).
_CLOSE, _EXPIRE = object(), object()


def _discard(index: dict[Hashable, set[Window]], key: Hashable, window: Window) -> None:
    windows = index.get(key)
    if windows is not None:
        windows.discard(window)
        if not windows:
            del index[key]
