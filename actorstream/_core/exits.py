"""How a program of actorstream ends on an error a user can fix: one line and an exit code.

``actorstream worker`` and ``python app.py`` (``trio.run(system.start)``) run the same
``System.start``, so they must end the same way on bad configuration and on a Redis that cannot
be used: the same line on stderr, the same exit code, no traceback. This module decides the line
and the code from the exception alone (pure: no trio, no sockets), and unwraps exception groups
(``except*`` and nurseries wrap what they pass on).
"""

from __future__ import annotations

import os
import re

from attrs import frozen
from redis import exceptions as rex

from .crashes import describe_error
from .errors import ConfigError, SupervisorGaveUp

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "TRACEBACK_ENV",
    "Exit",
    "classify_exit",
    "leaves",
    "wants_traceback",
]

EXIT_OK = 0
EXIT_FAILURE = 1  # a runtime failure, or the system gave up
EXIT_USAGE = 2  # bad arguments, configuration or input (argparse uses 2 as well)
EXIT_UNREACHABLE = 3  # Redis cannot be reached, or refuses our credentials
EXIT_INTERRUPTED = 130  # stopped by a signal before a clean end (a second one, or at start-up)

#: Set to 1 to get the traceback under the one line (``-v`` does the same on the CLI).
TRACEBACK_ENV = "ACTORSTREAM_TRACEBACK"

UNREACHABLE = (rex.ConnectionError, rex.TimeoutError, OSError)


@frozen(eq=False)
class Exit:
    """The one line to print (without the ``actorstream: error: `` prefix), the exit code, and
    the exception it is about (the leaf of a group, to re-raise plain)."""

    message: str
    code: int
    error: BaseException | None = None


def wants_traceback() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) groups, in order; an exception alone is its own leaf."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


_AUTH = re.compile(r"^authentication failed for (user '[^']*')")
_AT_URL = re.compile(r" (?:at|to) (?:redis|rediss|unix)://\S+?(?=: |$)")


def _detail(exc: BaseException) -> str:
    """The reason alone: the transport's messages name the URL, which the line names once."""
    text = _AT_URL.sub("", " ".join(str(exc).split()))
    for prefix in ("cannot connect: ", "cannot connect to: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text or type(exc).__name__


def classify_exit(exc: BaseException, url: str | None = None) -> Exit | None:
    """The line and code for a failure a user can fix; None for anything else (a bug: raise).

    ``url`` is shown as given: pass it with the password already redacted.
    """
    found = leaves(exc)
    where = f" at {url}" if url else ""
    for leaf in found:
        if isinstance(leaf, SupervisorGaveUp):
            cause = leaf.__cause__
            last = f"; last crash: {describe_error(leaves(cause)[-1])}" if cause else ""
            return Exit(f"{leaf}{last}", EXIT_FAILURE, leaf)
    for leaf in found:
        if isinstance(leaf, ConfigError):
            return Exit(str(leaf), EXIT_USAGE, leaf)
    for leaf in found:
        if isinstance(leaf, rex.AuthenticationError):
            detail = _detail(leaf)
            detail = _AUTH.sub(r"of \1", detail) if _AUTH.match(detail) else f": {detail}"
            return Exit(f"Redis{where} refused the credentials {detail}", EXIT_UNREACHABLE, leaf)
        if isinstance(leaf, rex.ResponseError) and "DB index is out of range" in str(leaf):
            return Exit(
                f"Redis{where} has no such database (the number after the last / of the URL; "
                f"{_detail(leaf)})", EXIT_USAGE, leaf,
            )
        if isinstance(leaf, rex.ResponseError) and str(leaf).startswith("NOPERM"):
            return Exit(f"Redis{where} refused a command to this user: {_detail(leaf)}",
                        EXIT_UNREACHABLE, leaf)
    if found and all(isinstance(leaf, UNREACHABLE) for leaf in found):
        return Exit(f"cannot reach Redis{where}: {_detail(found[0])}", EXIT_UNREACHABLE, found[0])
    return None
