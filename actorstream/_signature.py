"""Handler signatures, checked where the actor is declared (``System.actor``).

A handler that cannot take what it is given fails on its first event, far from the mistake, and
its partition then treats every event as failing: so a wrong signature is a ``ConfigError`` at
import time, naming the handler, what it is called with and what it declares.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from ._core.errors import ConfigError
from ._records import Record

__all__ = ["check_handler"]

#: What each form calls the handler with, for the messages.
_CALLED_WITH = {
    "event": "one event",
    "batch": "one list of events",
    "iterator": "one Events iterator",
}


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - an instance with async __call__
    return not inspect.isfunction(fn) and call is not None and inspect.iscoroutinefunction(call)


def _record_of(annotation: Any, form: str) -> Any:
    """The record type an annotation names for this form (``list[X]``, ``Events[X]``), or None."""
    if form == "event":
        return annotation
    args = typing.get_args(annotation)
    return args[0] if len(args) == 1 else None


def _check_annotation(fn: Callable[..., Any], param: str, form: str, record: type | None,
                      where: str, stream: str) -> None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return
    if param not in hints:
        return
    named = _record_of(hints[param], form)
    if not (isinstance(named, type) and issubclass(named, Record)):
        return
    carried = record.__name__ if record is not None else "dicts (no record=)"
    if record is None or not issubclass(record, named):
        raise ConfigError(
            f"{where}: parameter {param!r} is annotated with {named.__name__}, but stream "
            f"{stream!r} carries {carried}"
        )


def check_handler(fn: Callable[..., Any], *, actor: str, form: str, stream: str,
                  record: type | None) -> None:
    """Raise ``ConfigError`` unless ``fn`` is async and takes exactly what ``form`` passes."""
    where = f"actor {actor!r}"
    if not callable(fn):
        raise ConfigError(f"{where}: the handler {fn!r} is not callable")
    if not _is_async(fn):
        raise ConfigError(f"{where}: the handler must be an `async def` function")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check
    what = _CALLED_WITH[form]
    shown = f"{getattr(fn, '__name__', 'handler')}({', '.join(signature.parameters)})"
    try:
        bound = signature.bind(object())
    except TypeError:
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in (
            p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        if not positional:
            name = getattr(fn, "__name__", "handle")
            raise ConfigError(
                f"{where}: the handler {shown} takes no positional parameter, but it is called "
                f"with {what}; declare one, e.g. `async def {name}(event) -> None`"
            ) from None
        others = [repr(p.name) for p in params if p is not positional[0]
                  and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ConfigError(
            f"{where}: the handler {shown} also requires {', '.join(others)}, but it is called "
            f"with {what} only; give the other parameters defaults"
        ) from None
    if bound.arguments:
        _check_annotation(fn, next(iter(bound.arguments)), form, record, where, stream)
