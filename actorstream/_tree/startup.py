"""The start of a worker: wait for Redis, then say that it runs (docs/running.md, "Starting").

One behaviour for ``python app.py`` and ``actorstream worker`` (both run ``System.start``): a
worker whose Redis does not answer yet waits, backing off up to ``MAX_DELAY`` seconds between
attempts, and says so once, with the URL (password redacted) and the reason; it says so again
when Redis answers. Under an orchestrator Redis may well come up after the workers, and exiting
would only turn that into a restart loop. Credentials Redis refuses are bad configuration, not
an outage: they raise at once.

A worker that owns its process (``install_signal_handlers``, the default) prints these lines
on stderr with a timestamp, whatever the logging set-up, and stops cleanly on SIGINT/SIGTERM
while it waits. Embedded workers (tests, the demo) only log them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio
from redis import exceptions as rex

from .._core.exits import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    TRACEBACK_ENV,
    Exit,
    wants_traceback,
)
from .._ops import logs as _logs
from .._transport import Client, redact_url

log = logging.getLogger("actorstream")

FIRST_DELAY = 0.5
MAX_DELAY = 10.0
PING_TIMEOUT = 5.0
_UNREACHABLE = (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, OSError)


def say(message: str, *, announce: bool, level: int = logging.INFO) -> None:
    """One line for the operator: on stderr if ``announce`` (in the log format of every other
    line, whatever the level), else to the log."""
    if announce:
        _logs.announce(message, level=level)
    else:
        log.log(level, "%s", message)


def _reason(exc: BaseException) -> str:
    # The transport's message names the URL again; its cause says what went wrong.
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, rex.ConnectionError) and isinstance(cause, OSError):
        exc = cause
    return str(exc) or type(exc).__name__


async def _ping(url: str) -> None:
    client = Client.from_url(url, connect_timeout=PING_TIMEOUT, socket_timeout=PING_TIMEOUT)
    client.connect_retry_for = 0.0
    try:
        with trio.fail_after(PING_TIMEOUT + 1):
            await client.execute("PING")
    except rex.ResponseError as exc:
        if "NOPERM" not in str(exc):  # may connect but not PING: it answers
            raise
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


async def wait_for_redis(url: str, *, announce: bool) -> None:
    """Return once Redis at ``url`` answers; until then back off, and say so once."""
    delay = FIRST_DELAY
    since: float | None = None
    while True:
        try:
            await _ping(url)
        except rex.AuthenticationError:
            raise
        except (trio.TooSlowError, *_UNREACHABLE) as exc:
            if since is None:
                since = trio.current_time()
                say(f"waiting for Redis at {redact_url(url)} ({_reason(exc)}); retrying with "
                    f"backoff, at most {MAX_DELAY:g}s apart", announce=announce,
                    level=logging.WARNING)
            await trio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, MAX_DELAY)
            continue
        if since is not None:
            waited = trio.current_time() - since
            say(f"Redis at {redact_url(url)} answers (waited {waited:.0f}s)", announce=announce)
        return


async def wait_for_redis_or_signal(url: str, *, announce: bool, signals: bool) -> bool:
    """``wait_for_redis``; False if SIGINT/SIGTERM came first (only when ``signals``)."""
    if not signals:
        await wait_for_redis(url, announce=announce)
        return True
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in received:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await wait_for_redis(url, announce=announce)
            nursery.cancel_scope.cancel()
            return True
    return False


def is_main_task() -> bool:
    """True in the task ``trio.run`` was given: the one whose end is the program's end."""
    task = trio.lowlevel.current_task()
    return task.parent_nursery is not None and (
        task.parent_nursery.parent_task is trio.lowlevel.current_root_task()
    )


def error_line(found: Exit) -> str:
    return f"actorstream: error: {found.message}"


def exit_with(found: Exit, exc: BaseException) -> NoReturn:
    """End the program as the CLI does: the traceback if asked for, one line, the exit code."""
    line = error_line(found)
    if wants_traceback():
        traceback.print_exception(exc, file=sys.stderr)
    elif found.code == EXIT_FAILURE:  # a failure of the runtime: where it happened matters
        line += f" (-v or {TRACEBACK_ENV}=1 shows the traceback)"
    if _logs.announce_format() == "json":
        _logs.announce(line, fmt="json", level=logging.ERROR)
    else:
        print(line, file=sys.stderr, flush=True)
    raise SystemExit(found.code)


def plain_error(found: Exit, exc: BaseException) -> BaseException:
    """The one exception to raise in place of a group (its own cause and traceback kept)."""
    error = found.error if found.error is not None else exc
    error.__suppress_context__ = True
    return error


async def run_owning_signals(start: Callable[[], Awaitable[None]],
                             on_signal: Callable[[], bool]) -> None:
    """Run ``start`` (a worker that owns its process) with SIGINT and SIGTERM never left to
    their default handlers, so that a second signal always exits with 130, never 143.

    The worker's own watcher handles signals while it runs; this one gets those that arrive
    around it (the moment between Redis answering and the watcher starting, and the end of a
    drain). ``on_signal`` says whether to stop at once. Once ``start`` is over, a signal
    during the process's last moments exits with 130 at once: it asks for what is happening.
    """
    # What trio restores when the receiver closes, and redelivers an unconsumed signal to.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_interrupted)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in received:
                    if on_signal():
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch)
            await start()
            nursery.cancel_scope.cancel()
    # The interpreter's shutdown puts the default handlers back (a signal then kills: 143);
    # hold these signals from the last atexit hook on: the exit code is already decided.
    atexit.register(signal.pthread_sigmask, signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _exit_interrupted(signum: int, frame: object) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)
