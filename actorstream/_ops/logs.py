"""Structured logs: a timestamp on every line, and ``--log-format json`` (one object a line).

Library code logs through stdlib ``logging`` under ``actorstream.*`` and never configures the
root logger. Only the CLI (``actorstream worker``) calls :func:`configure_logging`; an app run
as ``python app.py`` calls it itself (or configures logging its own way): configuring logging
from ``System.start`` would override what an embedding application chose.

Context fields (worker, app, stream, partition, entry id) come from ``extra=`` on the call, or
else from :data:`log_context`, a ``ContextVar`` that trio copies into every child task: the
runtime binds ``worker``/``app`` once in its root task and each partition actor binds
``stream``/``partition`` in its own, so every line below carries them at no per-event cost.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, Final

#: Context fields, in output order. ``entry_id`` is bound only where an event is known.
FIELDS: Final = ("worker", "app", "stream", "actor", "partition", "entry_id")

log_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "actorstream_log_context", default=types.MappingProxyType({})
)

LOG_FORMATS: Final = ("text", "json")
_format = "text"  # what configure_logging chose: the operator lines (``announce``) follow it


def announce_format() -> str:
    return _format


def bind(**fields: Any) -> None:
    """Add fields to this task's log context (and to the tasks it starts from now on)."""
    log_context.set({**log_context.get(), **fields})


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Fields for the duration of a block (a handler call, a crash report)."""
    token = log_context.set({**log_context.get(), **fields})
    try:
        yield
    finally:
        log_context.reset(token)


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields of a record: ``extra=`` wins over the bound context."""
    ctx = log_context.get()
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is None:
            value = ctx.get(name)
        if value is not None:
            out[name] = value
    return out


def _iso(created: float) -> str:
    """UTC, millisecond precision, RFC 3339: sortable and unambiguous across hosts."""
    seconds = int(created)
    ms = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, context fields, message, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        doc.update(context_of(record))
        doc["message"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            doc["error_type"] = record.exc_info[0].__name__
            doc["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["traceback"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-30T05:31:02.123Z WARNING actorstream.partition [app orders[3]]: message``."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = context_of(record)
        where = ""
        if ctx:
            parts = [str(ctx["app"])] if "app" in ctx else []
            if "stream" in ctx:
                part = str(ctx["stream"])
                if "partition" in ctx:
                    part += f"[{ctx['partition']}]"
                parts.append(part)
            if "entry_id" in ctx:
                parts.append(str(ctx["entry_id"]))
            where = f" [{' '.join(parts)}]" if parts else ""
        line = (
            f"{_iso(record.created)} {record.levelname} {record.name}{where}: "
            f"{record.getMessage()}"
        )
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def announce(
    text: str,
    *,
    fmt: str | None = None,
    stream: IO[str] | None = None,
    level: int = logging.INFO,
    name: str = "actorstream",
) -> None:
    """A line a worker always prints (start, stop, waiting), whatever the level: in the log
    format of every other line (``fmt``, else what :func:`configure_logging` chose).

    With ``--log-format json`` every line on stderr must parse as JSON, these included.
    """
    record = logging.LogRecord(name, level, "", 0, text, None, None)
    formatter = JsonFormatter() if (fmt or _format) == "json" else TextFormatter()
    print(formatter.format(record), file=stream if stream is not None else sys.stderr,
          flush=True)


def configure_logging(
    *, level: int | str = logging.WARNING, fmt: str = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Configure the root logger for a worker process (the CLI, or an app's ``__main__``).

    Replaces the root's handlers with one stream handler (stderr by default) in ``fmt``
    (``"text"`` or ``"json"``); returns it. Not for library code.
    """
    global _format
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    _format = fmt
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
