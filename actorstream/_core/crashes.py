"""What users see of handler failures (pure): one-line errors, the rate limit of crash logs, and
the bounded traceback kept in dead-letter entries and printed by ``actorstream dlq show``."""

from __future__ import annotations

import enum
import linecache
import math
import os
import traceback
from pathlib import Path

__all__ = ["CrashLogLimit", "LogAction", "describe_error", "format_bounded_traceback"]


class LogAction(enum.Enum):
    FULL = "full"  # log this failure with its whole traceback
    COUNT = "count"  # log one line: how many failures were not logged since
    QUIET = "quiet"  # log nothing


class CrashLogLimit:
    """Rate limit of one partition's crash logs: the first in full, then a count.

    A failure is logged in full when its exception type is new to the partition, or was last
    seen ``interval`` seconds ago or more; the others are counted, and a line with the count is
    due at most every ``interval`` seconds. A thousand poison events make one traceback and a
    few lines, not a thousand tracebacks.
    """

    def __init__(self, interval: float = 30.0, types: int = 32) -> None:
        self.interval = interval
        self._types: dict[str, float] = {}  # exception type -> time of its last failure
        self._max_types = types
        self._line_at = -math.inf
        self.suppressed = 0

    def on_failure(self, error_type: str, now: float) -> LogAction:
        last = self._types.pop(error_type, None)
        self._types[error_type] = now  # most recent last
        if len(self._types) > self._max_types:
            del self._types[next(iter(self._types))]
        if last is None or now - last >= self.interval:
            self._line_at = now
            return LogAction.FULL
        self.suppressed += 1
        if now - self._line_at >= self.interval:
            return LogAction.COUNT
        return LogAction.QUIET

    def take_count(self, now: float) -> int:
        """The failures not logged since the last line; resets the count and the interval."""
        n, self.suppressed = self.suppressed, 0
        self._line_at = now
        return n


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, at most ``limit`` characters (statistics, `top`)."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_bounded_traceback(
    exc: BaseException, *, frames: int = 8, limit: int = 4000, chain: int = 3
) -> str:
    """A traceback bounded in size, for dead-letter entries and `dlq show`.

    The exception's type and message, and its last ``frames`` frames with file, line, function
    and source line, most recent last like Python's own; then up to ``chain`` causes
    (``raise ... from``/during handling) with fewer frames, and the first leaves of an exception
    group. Never longer than ``limit`` characters: the oldest lines go first, the final
    ``Type: message`` line always stays.
    """
    lines = _format_one(exc, frames, depth=0, chain=chain, seen=set())
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    last = lines[-1][: limit // 2]
    budget = limit - len(last) - len("...\n") - 1
    kept: list[str] = []
    for line in reversed(lines[:-1]):
        if budget - len(line) - 1 < 0:
            break
        kept.append(line)
        budget -= len(line) + 1
    return "\n".join(["...", *reversed(kept), last])


#: actorstream's own source: its frames (the handling loop, middleware plumbing) say nothing
#: about why a handler failed, so a dead letter's traceback leaves them out.
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep


def _user_frames(stack: traceback.StackSummary) -> list[traceback.FrameSummary]:
    """The frames outside actorstream; all of them when every frame is ours (a decode error)."""
    mine = [f for f in stack if not f.filename.startswith(_PACKAGE)]
    return mine if mine else list(stack)


def _same_failure(first: BaseException, second: BaseException) -> bool:
    return first is second or (type(first) is type(second) and str(first) == str(second)
                               and first.args == second.args)


def _format_one(
    exc: BaseException, frames: int, *, depth: int, chain: int, seen: set[int]
) -> list[str]:
    seen.add(id(exc))
    lines: list[str] = []
    cause = exc.__cause__
    context = None if exc.__suppress_context__ else exc.__context__
    if context is not None and _same_failure(context, exc):
        context = None  # the runtime re-raised the handler's failure: show it once
    link = cause if cause is not None else context
    if link is not None and depth < chain and id(link) not in seen:
        lines += _format_one(link, max(1, frames // 2), depth=depth + 1, chain=chain, seen=seen)
        lines.append(
            "The above exception was the direct cause of the following exception:"
            if cause is not None
            else "During handling of the above exception, another exception occurred:"
        )
    stack = _user_frames(traceback.extract_tb(exc.__traceback__))
    shown = stack[-frames:] if frames > 0 else []
    omitted = len(stack) - len(shown)
    header = "Traceback (most recent call last"
    header += f"; {omitted} earlier frames omitted):" if omitted else "):"
    if shown:
        lines.append(header)
    for frame in shown:
        filename = frame.filename
        if len(filename) > 120:
            filename = "..." + filename[-117:]
        lines.append(f'  File "{filename}", line {frame.lineno}, in {frame.name}')
        source = frame.line if frame.line is not None else linecache.getline(
            frame.filename, frame.lineno or 0
        )
        source = source.strip() if source else ""
        if source:
            lines.append("    " + (source if len(source) <= 160 else source[:157] + "..."))
    if isinstance(exc, BaseExceptionGroup):  # its leaves first: the group's line stays last
        subs = exc.exceptions
        for i, sub in enumerate(subs[:3], 1):
            inner = _format_one(sub, max(1, frames // 2), depth=chain, chain=chain, seen=seen)
            lines.append(f"  +-- sub-exception {i} of {len(subs)} --")
            lines += ["  | " + line for line in inner]
        if len(subs) > 3:
            lines.append(f"  +-- and {len(subs) - 3} more")
        lines.append(describe_error(exc, 1000))  # "Type: message (n sub-exceptions)"
        return lines
    lines.append(describe_error(exc, 1000))
    return lines
