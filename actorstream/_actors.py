"""Actor declarations: which handler, in which form, with which per-actor settings."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from attrs import frozen

from ._core import keys as _keys
from ._core.dispatch import Ordering
from ._core.errors import ConfigError
from ._core.failures import Classification, ContainmentPolicy, error_types
from ._middleware import ErrorHook, Middleware
from ._tables import Table

if TYPE_CHECKING:
    from ._streams import Stream


class Form(enum.Enum):
    EVENT = "event"  # async def handle(event)
    BATCH = "batch"  # async def handle(events: list[T])
    ITERATOR = "iterator"  # async def handle(events: Events[T]) with `async for`


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, int | float) or value < 0):
        raise ConfigError(f"{attribute.name} must be a non-negative number, got {value!r}")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, int | float) or value <= 0):
        raise ConfigError(f"{attribute.name} must be a positive number or None, got {value!r}")


def _batch_size(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise ConfigError(f"{attribute.name} must be an integer in 1..1000, got {value!r}")


def _max_deliveries(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"max_deliveries must be an integer >= 1, got {value!r}")


def _retries(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {value!r}")


def _poison_errors(value: Any) -> tuple[type[Exception], ...]:
    return error_types(value, setting="poison_errors")


def _transient_errors(value: Any) -> tuple[type[Exception], ...]:
    return error_types(value, setting="transient_errors")


def _backoff_max(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0.1 <= value < float("inf")
    ):
        raise ConfigError(f"backoff_max must be a number of seconds >= 0.1, got {value!r}")


#: Events (batches, for the batch form) in flight per partition with ordering "key" or "none",
#: unless ``concurrency`` says otherwise (benchmarks/bench_concurrency.py measured them).
DEFAULT_CONCURRENCY = {Form.EVENT: 256, Form.BATCH: 4}
MAX_CONCURRENCY = 10_000


def _ordering(value: Any) -> Ordering:
    if isinstance(value, Ordering):
        return value
    try:
        return Ordering(value)
    except ValueError:
        names = ", ".join(repr(o.value) for o in Ordering)
        raise ConfigError(f"ordering must be one of {names}, got {value!r}") from None


def _concurrency(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigError(
            f"concurrency must be an integer in 1..{MAX_CONCURRENCY} (events in flight per "
            f"partition), got {value!r}"
        )
    if instance.ordering is Ordering.PARTITION and value != 1:
        raise ConfigError(
            f"concurrency={value} needs ordering='key' or ordering='none': "
            "ordering='partition' (the default) handles one event at a time"
        )


@frozen
class ActorSettings:
    """Per-actor settings, validated at declaration.

    - ``batch_size``: entries per XREADGROUP (and the most events a batch handler gets).
    - ``batch_wait``: the batch form: a batch handler call waits up to this long (seconds)
      to fill its batch up to ``batch_size`` when fewer entries are there, with every
      ``ordering``; refused for the other forms (the iterator form has ``take(n, within=)``).
    - ``max_deliveries``: an event delivered more often than this is dead-lettered.
    - ``timeout``: per event (per batch for the batch form); a hung handler is a crash.
    - ``retries``/``retry_backoff``: in-process retries before the failure counts.
    - ``poison_errors``: exception types dead-lettered on their first failure.
    - ``transient_errors``: exception types that always back off and never spend a delivery.
    - ``backoff_max``: the longest wait of a ``backing-off`` partition (seconds).
    - ``ordering``: ``"partition"`` (one event at a time, in stream order), ``"key"`` (one
      event of a key at a time, in stream order; keys concurrently) or ``"none"``.
    - ``concurrency``: events (batch form: batches) in flight per partition with ``"key"``
      or ``"none"``; None picks the default (``DEFAULT_CONCURRENCY``).

    How failures are contained: docs/dead-letters.md, "Poison or outage".
    """

    batch_size: int = attrs.field(default=100, validator=_batch_size)
    batch_wait: float = attrs.field(default=0.0, validator=_non_negative)
    max_deliveries: int = attrs.field(default=3, validator=_max_deliveries)
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    retries: int = attrs.field(default=0, validator=_retries)
    retry_backoff: float = attrs.field(default=0.1, validator=_non_negative)
    poison_errors: tuple[type[Exception], ...] = attrs.field(
        default=(), converter=_poison_errors
    )
    transient_errors: tuple[type[Exception], ...] = attrs.field(
        default=(), converter=_transient_errors
    )
    backoff_max: float = attrs.field(default=30.0, validator=_backoff_max)
    ordering: Ordering = attrs.field(default=Ordering.PARTITION, converter=_ordering)
    concurrency: int | None = attrs.field(default=None, validator=_concurrency)

    def in_flight(self, form: Form) -> int:
        """The most units (events, or batches for the batch form) in flight per partition."""
        if self.ordering is Ordering.PARTITION:
            return 1
        return self.concurrency or DEFAULT_CONCURRENCY.get(form, 1)

    def __attrs_post_init__(self) -> None:
        self.containment()  # rejects a type named both poison and transient

    def containment(self) -> ContainmentPolicy:
        """The failure-containment policy these settings make (``_core.failures``)."""
        return ContainmentPolicy(
            max_deliveries=self.max_deliveries,
            backoff_initial=min(0.1, self.backoff_max),
            backoff_max=self.backoff_max,
            classification=Classification(self.poison_errors, self.transient_errors),
        )


Handler = Callable[..., Any]

PROCESSING = ("at_least_once", "exactly_once")


@attrs.define(eq=False)
class ActorSpec:
    """One declared actor: a consumer group on one stream, one partition actor per partition."""

    name: str
    stream: Stream[Any]
    handler: Handler
    form: Form
    settings: ActorSettings
    on_error: ErrorHook | None = None
    middleware: tuple[Middleware, ...] = ()
    #: tables this actor writes (``_tables.Table``), committed with its acks
    tables: tuple[Any, ...] = ()
    #: "at_least_once" or "exactly_once" (events sent by the handler held for the commit)
    processing: str = "at_least_once"
    #: after a commit, WAIT for this many replicas (0: do not wait), up to ``wait_timeout`` s
    wait_replicas: int = 0
    wait_timeout: float = 1.0
    #: per-partition timers (``_core.punctuation.PunctuatorSpec``), added by ``punctuate``
    punctuators: tuple[Any, ...] = ()

    @property
    def exactly_once(self) -> bool:
        return self.processing == "exactly_once"

    @property
    def stateful(self) -> bool:
        """Whether handling an event may commit more than its ack (a punctuator commits its
        progress mark)."""
        return bool(self.tables) or self.exactly_once or bool(self.punctuators)

    def __attrs_post_init__(self) -> None:
        self._check_handler()
        self._check_batch_wait()
        self._check_iterator()
        self._check_state()

    def _check_iterator(self) -> None:
        """The iterator form hands the partition's events to one long call of the handler:
        nothing runs around each event, so what would must be refused, not ignored."""
        if self.form is not Form.ITERATOR:
            return
        given = [
            name
            for name, set_ in (
                ("middleware", bool(self.middleware)),
                ("on_error", self.on_error is not None),
                ("timeout", self.settings.timeout is not None),
                ("retries", self.settings.retries > 0),
            )
            if set_
        ]
        if given:
            raise ConfigError(
                f"actor {self.name!r}: {', '.join(given)} cannot apply to the iterator form (its "
                "handler takes every event of the partition in one call, so nothing runs around "
                "each event); use the event or batch form, or do it inside the loop"
            )

    def _check_batch_wait(self) -> None:
        """Only a batch handler call has a batch to fill: elsewhere ``batch_wait`` is refused,
        not ignored."""
        wait = self.settings.batch_wait
        if wait and self.form is not Form.BATCH:
            instead = (
                "use events.take(n, within=seconds) in the loop" if self.form is Form.ITERATOR
                else "declare the actor with batch=True and a handler taking a list of events"
            )
            raise ConfigError(
                f"actor {self.name!r}: batch_wait={wait!r} applies to the batch form (a handler "
                f"taking a list of events); the {self.form.value} form has no batch to fill: "
                f"{instead}, or leave batch_wait out"
            )

    def _check_state(self) -> None:
        name = self.name
        if self.processing not in PROCESSING:
            raise ConfigError(
                f"actor {name!r}: processing must be one of {', '.join(map(repr, PROCESSING))}, "
                f"got {self.processing!r}"
            )
        if self.stateful and self.form is Form.ITERATOR:
            raise ConfigError(
                f"actor {name!r}: tables and processing='exactly_once' need the event or batch "
                "form (an iterator's handler owns its loop, so an event has no commit point)"
            )
        if self.tables and self.settings.ordering is Ordering.NONE:
            raise ConfigError(
                f"actor {name!r}: tables need ordering='partition' or 'key' (with 'none' two "
                "events of one key could change it at once)"
            )
        replicas = self.wait_replicas
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ConfigError(f"actor {name!r}: wait_replicas must be an integer >= 0, got "
                              f"{replicas!r}")
        if replicas and not self.stateful:
            raise ConfigError(f"actor {name!r}: wait_replicas applies to commits: declare "
                              "tables or processing='exactly_once'")
        timeout = self.wait_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"actor {name!r}: wait_timeout must be a positive number of "
                              f"seconds, got {timeout!r}")
        for table in self.tables:
            if not isinstance(table, Table):
                raise ConfigError(f"actor {name!r}: tables must be declared with "
                                  f"system.table(...), got {table!r}")

    def _check_handler(self) -> None:
        if not inspect.iscoroutinefunction(self.handler):
            raise ConfigError(
                f"actor {self.name!r}: the handler must be an `async def` function, "
                f"got {self.handler!r}"
            )
        _keys.check_name("actor", self.name)
        if self.on_error is not None and not inspect.iscoroutinefunction(self.on_error):
            raise ConfigError(f"actor {self.name!r}: on_error must be an `async def` function")
        if self.form is Form.ITERATOR and self.settings.ordering is not Ordering.PARTITION:
            raise ConfigError(
                f"actor {self.name!r}: the iterator form handles its events one at a time in "
                f"its own loop; ordering={self.settings.ordering.value!r} needs the event or "
                "batch form (ordering='partition' is the only one it takes)"
            )
        for mw in self.middleware:
            if not callable(mw):
                raise ConfigError(f"actor {self.name!r}: middleware {mw!r} is not callable")
