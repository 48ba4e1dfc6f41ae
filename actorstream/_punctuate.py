"""Declaring punctuators: ``@system.punctuate(actor, every=60.0, time="stream")``.

A punctuator is a timer of one actor, per partition: it runs inside the partition actor that
holds the partition's lease (once per partition and tick, on one worker), between two events,
with the actor's tables in scope like a handler, and what it does (table changes, events sent
under ``processing="exactly_once"``, its progress mark) is committed in the partition's next
fenced transaction. The tick arithmetic is in ``_core.punctuation``; ``_tree.punctuators``
runs it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ._actors import ActorSpec, Form
from ._core import keys as _keys
from ._core.dispatch import Ordering
from ._core.errors import ConfigError
from ._core.punctuation import PunctuatorSpec
from ._streams import Stream

__all__ = ["punctuate"]

P = TypeVar("P", bound=Callable[..., Any])


def _actor_of(system: Any, actor: Any) -> ActorSpec:
    if isinstance(actor, Stream):
        raise ConfigError(
            f"punctuate: pass an actor (its handler, or its name), not the stream "
            f"{actor.name!r}: a stream may have several actors, each with its own partitions"
        )
    specs: dict[str, ActorSpec] = system.actors
    if isinstance(actor, str):
        found = specs.get(actor)
    else:
        found = next((s for s in specs.values() if s.handler is actor), None)
    if found is None:
        what = actor if isinstance(actor, str) else getattr(actor, "__name__", actor)
        raise ConfigError(
            f"punctuate: {what!r} is not an actor of system {system.name!r} (declare the "
            "actor first, with @system.actor, and pass its handler or its name)"
        )
    return found


def _check_actor(spec: ActorSpec) -> None:
    """A tick runs between two events of its partition, with no other event in flight: the
    partition's one-at-a-time event loop is where that point exists."""
    name = spec.name
    if spec.form is not Form.EVENT:
        raise ConfigError(
            f"actor {name!r}: punctuators need the event form (one event per handler call), "
            f"not the {spec.form.value} form: a tick runs between two events of its partition"
        )
    if spec.settings.ordering is not Ordering.PARTITION:
        raise ConfigError(
            f"actor {name!r}: punctuators need ordering='partition' (got "
            f"{spec.settings.ordering.value!r}): a tick reads and changes the partition's "
            "tables, so no event may be in flight while it runs"
        )


def punctuate(
    system: Any, actor: Any, *, every: float, time: str = "stream", name: str | None = None
) -> Callable[[P], P]:
    """Declare ``async def fn(tick: Tick)`` to run every ``every`` seconds of ``time``
    (``"stream"``: event time, as the partition's events move it; ``"wall"``: the wall clock,
    also when no event comes), per partition of ``actor`` (its handler, or its name), inside
    the partition actor, committed like a handler (docs/windows.md, "Punctuators")."""
    spec = _actor_of(system, actor)

    def decorate(fn: P) -> P:
        label = name or str(getattr(fn, "__name__", ""))
        where = f"actor {spec.name!r}: punctuator {label!r}"
        try:
            _keys.check_name("punctuator", label)
        except ConfigError as exc:
            raise ConfigError(f"actor {spec.name!r}: {exc}") from None
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"{where} must be an `async def` function, got {fn!r}")
        try:
            inspect.signature(fn).bind(None)
        except TypeError:
            raise ConfigError(f"{where}: {label}() must take one argument (the Tick)") from None
        punctuator = PunctuatorSpec(spec.name, label, fn, every, time)
        _check_actor(spec)
        if any(p.name == label for p in spec.punctuators):
            raise ConfigError(f"{where} is already declared (pass name= to declare another)")
        spec.punctuators = (*spec.punctuators, punctuator)
        return fn

    return decorate
