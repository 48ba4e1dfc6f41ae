"""Failure containment: what a partition does when its handler fails (pure: no trio, no I/O).

Handler failures stay at their partition; this module decides, with plain numbers and no
sockets, what the partition actor does next. The rule (docs/dead-letters.md, "Poison or
outage") in short:

1. ``on_error`` decides first when the actor has one (``DEAD_LETTER``/``SKIP`` are final).
2. An exception type named in ``poison_errors`` is dead-lettered on its first failure; a type
   named in ``transient_errors`` always backs off and never spends a delivery.
3. A *failure streak* is the run of distinct events of one partition that failed since its
   last success. The first event of a streak is presumed poison: it is redelivered at once
   (Redis counts the delivery; no restart, no backoff) and dead-lettered when its
   ``max_deliveries``-th delivery fails.
4. An outage is presumed when another partition of the same actor (on this worker) failed
   since the last success of any, or when a second distinct event fails before any success
   (streak >= 2) and nothing succeeded elsewhere since it first failed. The partition goes
   ``backing-off`` (exponential, capped by ``backoff_max``), keeps its lease, and retries the
   same event in process without spending a delivery; it resumes at the first success.
5. Evidence of health settles it the other way: when another partition handled an event since
   this event first failed, and none failed since, the event is poison after all and goes on
   along rule 3 (so a run of poison events drains while siblings are healthy).

So an outage costs at most one dead letter per partition (the first event of its streak, and
usually none because rule 4 sees the other partitions fail), a poison event costs
``max_deliveries`` handler calls and no restart, and a run of poison events with nothing
succeeding anywhere waits like an outage, visibly, instead of draining the backlog into the
dead letters. When in doubt the event is kept.

Also here: exception classification and per-partition restart accounting in which a dead letter
counts as progress (``RestartBudget``). What users see of failures (the rate limit of crash logs,
the bounded traceback of dead-letter entries) is in ``_core.crashes``.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any

from attrs import field, frozen

from .errors import ConfigError
from .validators import number

__all__ = [
    "Action",
    "Classification",
    "ContainmentPolicy",
    "Decision",
    "ErrorClass",
    "HealthBoard",
    "PartitionFailures",
    "RestartBudget",
    "RestartDecision",
    "error_types",
]

ErrorTypes = tuple[type[Exception], ...]


# -- classification --------------------------------------------------------------------------


class ErrorClass(enum.Enum):
    """What the actor's settings say about an exception's type."""

    POISON = "poison"  # dead-letter on the first failure
    TRANSIENT = "transient"  # back off, never spend a delivery
    UNCLASSIFIED = "unclassified"  # the streak rule decides


def error_types(value: Any, *, setting: str = "error types") -> ErrorTypes:
    """Normalise a setting naming exception types: one type or an iterable of them.

    Rejects anything that is not a subclass of ``Exception`` (``BaseException``-only types such
    as ``KeyboardInterrupt`` or trio's ``Cancelled`` are not handler failures) with a precise
    message. Duplicates are dropped, the order is kept.
    """
    if isinstance(value, type):
        items: list[Any] = [value]
    elif isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            f"{setting} must be an exception type or a tuple of them, got {value!r}"
        )
    else:
        items = list(value)
    out: list[type[Exception]] = []
    for item in items:
        if not isinstance(item, type) or not issubclass(item, BaseException):
            raise ConfigError(f"{setting}: {item!r} is not an exception type")
        if not issubclass(item, Exception):
            raise ConfigError(
                f"{setting}: {item.__name__} is not a subclass of Exception "
                "(it is never a handler failure)"
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def _poison_converter(value: Any) -> ErrorTypes:
    return error_types(value, setting="poison_errors")


def _transient_converter(value: Any) -> ErrorTypes:
    return error_types(value, setting="transient_errors")


@frozen
class Classification:
    """Exception types that are poison at once, and types that are always transient.

    The most specific match wins: with ``poison=(ValueError,)`` and
    ``transient=(UnicodeDecodeError,)`` a ``UnicodeDecodeError`` is transient, any other
    ``ValueError`` poison (the first class of the exception's MRO named in either setting).
    An exception group is classified by its leaves when they all agree, else unclassified.
    """

    poison: ErrorTypes = field(default=(), converter=_poison_converter)
    transient: ErrorTypes = field(default=(), converter=_transient_converter)

    def __attrs_post_init__(self) -> None:
        both = [t.__name__ for t in self.poison if t in self.transient]
        if both:
            raise ConfigError(
                f"{', '.join(both)} named in both poison_errors and transient_errors"
            )

    def classify(self, exc: BaseException) -> ErrorClass:
        if isinstance(exc, BaseExceptionGroup):
            classes = {self.classify(leaf) for leaf in _leaves(exc)}
            return classes.pop() if len(classes) == 1 else ErrorClass.UNCLASSIFIED
        if not self.poison and not self.transient:
            return ErrorClass.UNCLASSIFIED
        for cls in type(exc).__mro__:
            if cls in self.poison:
                return ErrorClass.POISON
            if cls in self.transient:
                return ErrorClass.TRANSIENT
        return ErrorClass.UNCLASSIFIED


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


# -- the streak rule ---------------------------------------------------------------------------


_FINITE_POSITIVE = number("a finite number > 0", lambda v: math.isfinite(v) and v > 0)


@frozen
class ContainmentPolicy:
    """The settings the rule reads (from the actor's ``ActorSettings``).

    ``backoff_initial`` is the first wait of a backing-off partition, doubled (times
    ``multiplier``) on every failed retry up to ``backoff_max``, with +-``jitter`` so that the
    partitions of a fleet do not retry in step.
    """

    max_deliveries: int = field(
        default=3, validator=number("an int >= 1", lambda v: v >= 1, integer=True)
    )
    backoff_initial: float = field(default=0.1, validator=_FINITE_POSITIVE)
    backoff_max: float = field(default=30.0, validator=_FINITE_POSITIVE)
    multiplier: float = field(
        default=2.0,
        validator=number("a finite number >= 1", lambda v: math.isfinite(v) and v >= 1),
    )
    jitter: float = field(default=0.1, validator=number("in [0, 1)", lambda v: 0 <= v < 1))
    classification: Classification = field(factory=Classification)

    def __attrs_post_init__(self) -> None:
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(
                f"ContainmentPolicy.backoff_max ({self.backoff_max!r}) must be >= "
                f"backoff_initial ({self.backoff_initial!r})"
            )


class Action(enum.Enum):
    """What the partition actor does with the event that just failed."""

    REDELIVER = "redeliver"  # hand it to the handler again as a new delivery (Redis counts it)
    DEAD_LETTER = "dead-letter"  # move it to the dead letters (acked atomically), go on
    BACK_OFF = "back-off"  # wait ``delay``, then retry it in process: no delivery spent


@frozen
class Decision:
    action: Action
    delay: float
    reason: str  # poison-type | transient-type | outage | poison-suspect | max-deliveries


class HealthBoard:
    """The evidence shared by the partitions of one actor in one worker.

    ``successes`` only grows (a sequence number, so two moments compare without clock ties);
    ``failing`` holds the distinct events, by partition, that failed since the last success of
    any partition. Updated per handled batch on the hot path, per failure on the slow path.
    """

    __slots__ = ("_failing", "successes")

    def __init__(self) -> None:
        self.successes = 0
        self._failing: set[tuple[int, Hashable]] = set()

    def record_successes(self, n: int = 1) -> None:
        if n > 0:
            self.successes += n
            if self._failing:
                self._failing.clear()

    def record_failure(self, partition: int, event: Hashable) -> None:
        self._failing.add((partition, event))

    def forget(self, partition: int, event: Hashable | None = None) -> None:
        """Drop a dead-lettered event (poison is no outage evidence), or a stopped partition."""
        if event is not None:
            self._failing.discard((partition, event))
        else:
            self._failing = {f for f in self._failing if f[0] != partition}

    def failing_elsewhere(self, partition: int) -> bool:
        """Did an event of another partition fail since the last success anywhere?"""
        return any(p != partition for p, _ in self._failing)


class PartitionFailures:
    """The failure streak and backoff of one (actor, partition); it survives restarts.

    Call ``on_failure`` for each failed handling (after ``on_error``, timeout and in-process
    retries; record this partition's own successes on the board first), ``on_success`` after a
    handled event (per batch is enough) and ``on_dead_letter`` once a failing event has been
    moved. ``state`` is what ``statistics()`` shows; ``retry_early()`` tells a backing-off
    partition that others recovered, so it need not sleep out its backoff.
    """

    def __init__(
        self,
        policy: ContainmentPolicy,
        board: HealthBoard,
        partition: int,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.board = board
        self.partition = partition
        self._rng = rng if rng is not None else random.Random()
        self.streak = 0  # distinct events failed since the last success
        self.failing: Hashable | None = None  # the event failing now (None: none)
        self.backing_off = False
        self.delay = 0.0  # the last backoff chosen
        self._level = 0  # backoffs in a row
        self._event_mark = 0  # board.successes when the failing event first failed
        self._decision_mark = 0  # board.successes at the last decision

    @property
    def state(self) -> str:
        return "backing-off" if self.backing_off else "running"

    def others_healthy(self) -> bool:
        """Evidence of poison: another partition handled an event since this one first failed,
        and none failed since."""
        board = self.board
        return board.successes > self._event_mark and not board.failing_elsewhere(self.partition)

    def retry_early(self) -> bool:
        """A backing-off partition may retry now: others succeeded since it decided to wait."""
        board = self.board
        return (
            self.backing_off
            and board.successes > self._decision_mark
            and not board.failing_elsewhere(self.partition)
        )

    def on_success(self) -> None:
        self.streak = 0
        self.failing = None
        self.backing_off = False
        self._level = 0
        self.delay = 0.0

    def on_dead_letter(self) -> None:
        """The failing event is gone (progress): the streak stays, the backoff starts over."""
        if self.failing is not None:
            self.board.forget(self.partition, self.failing)
        self.failing = None
        self.backing_off = False
        self._level = 0

    def on_failure(
        self, event: Hashable, deliveries: int, error_class: ErrorClass = ErrorClass.UNCLASSIFIED
    ) -> Decision:
        """Decide for ``event``, whose ``deliveries``-th delivery (Redis's count) just failed."""
        board = self.board
        if event != self.failing:
            self.streak += 1
            self.failing = event
            self._event_mark = board.successes
        board.record_failure(self.partition, event)
        self._decision_mark = board.successes
        if error_class is ErrorClass.POISON:
            return self._decide(Action.DEAD_LETTER, "poison-type")
        if error_class is ErrorClass.TRANSIENT:
            return self._back_off("transient-type")
        if board.failing_elsewhere(self.partition) or (
            self.streak >= 2 and not self.others_healthy()
        ):
            return self._back_off("outage")
        if deliveries >= self.policy.max_deliveries:
            return self._decide(Action.DEAD_LETTER, "max-deliveries")
        return self._decide(Action.REDELIVER, "poison-suspect")

    def _decide(self, action: Action, reason: str, delay: float = 0.0) -> Decision:
        self.backing_off = action is Action.BACK_OFF
        return Decision(action, delay, reason)

    def _back_off(self, reason: str) -> Decision:
        policy = self.policy
        base = min(policy.backoff_max, policy.backoff_initial * policy.multiplier**self._level)
        if base < policy.backoff_max:
            self._level += 1
        jitter = policy.jitter * self._rng.uniform(-1.0, 1.0) if policy.jitter else 0.0
        self.delay = min(policy.backoff_max, max(policy.backoff_initial, base * (1.0 + jitter)))
        return self._decide(Action.BACK_OFF, reason, self.delay)


# -- restarts ----------------------------------------------------------------------------------


@frozen
class RestartDecision:
    delay: float
    backing_off: bool  # the partition exceeded its intensity without progress


class RestartBudget:
    """Restart intensity of one partition actor, where a handled or dead-lettered event is progress.

    Up to ``max_restarts`` crashes within ``within`` seconds without progress restart after an
    exponential backoff (``initial`` .. ``restart_max``); beyond that the partition is
    ``backing-off``: it keeps restarting, but with waits growing on to ``backoff_max``. It never
    gives up: a handler cannot end a worker. ``on_progress`` forgets every crash before it.
    """

    def __init__(
        self,
        *,
        max_restarts: int = 10,
        within: float = 60.0,
        initial: float = 0.05,
        restart_max: float = 5.0,
        backoff_max: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.25,
        rng: random.Random | None = None,
    ) -> None:
        if max_restarts < 0 or within <= 0 or initial < 0 or multiplier < 1:
            raise ConfigError("RestartBudget needs max_restarts >= 0, within > 0, initial >= 0")
        self.max_restarts = max_restarts
        self.within = within
        self.initial = initial
        self.restart_max = max(initial, restart_max)
        self.backoff_max = max(self.restart_max, backoff_max)
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._crashes: deque[float] = deque()  # crash times since the last progress
        self.backing_off = False

    def restarts_in_window(self, now: float) -> int:
        self._prune(now)
        return len(self._crashes)

    def on_progress(self) -> None:
        self._crashes.clear()
        self.backing_off = False

    def on_crash(self, now: float) -> RestartDecision:
        self._prune(now)
        n = len(self._crashes)
        self._crashes.append(now)
        if n < self.max_restarts:
            base = min(self.restart_max, self.initial * self.multiplier**n)
            cap = self.restart_max
            self.backing_off = False
        else:
            over = n - self.max_restarts
            base = min(self.backoff_max, self.restart_max * self.multiplier**over)
            cap = self.backoff_max
            self.backing_off = True
        if self.jitter and base > 0:
            base *= 1.0 + self.jitter * self._rng.uniform(-1.0, 1.0)
        return RestartDecision(max(0.0, min(cap, base)), self.backing_off)

    def _prune(self, now: float) -> None:
        while self._crashes and now - self._crashes[0] >= self.within:
            self._crashes.popleft()
