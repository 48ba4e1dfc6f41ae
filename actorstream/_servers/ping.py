"""Waiting for a server to answer, over actorstream's own transport (no second Redis client).

The public helpers are synchronous (they work in plain tests and, briefly blocking, in trio
tests), so the wait runs ``trio.run`` in a short-lived helper thread: a thread has no trio run
of its own, so this works whether or not the caller is inside one.
"""

from __future__ import annotations

import enum
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from redis import exceptions as rex

from .._transport import Client

T = TypeVar("T")


class Answer(enum.Enum):
    READY = "ready"
    EXITED = "exited"
    TIMEOUT = "timeout"


def run_in_thread(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run(fn, *args)`` in a helper thread; its result, or its exception re-raised."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = trio.run(fn, *args)
        except Exception as exc:  # handed over to the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="actorstream-testkit", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


async def answers(url: str, *, within: float = 0.5) -> bool:
    """True if the server at ``url`` answers (NOAUTH/NOPERM count) and is not LOADING."""
    client = Client.from_url(url, connect_timeout=within, socket_timeout=within,
                             client_name="actorstream:testing", max_connections=1)
    client.connect_retry_for = 0.0
    try:
        with trio.fail_after(within * 2):
            await client.execute("PING")
        return True
    except rex.BusyLoadingError:
        return False
    except (rex.AuthenticationError, rex.NoPermissionError, rex.ResponseError):
        return True  # it answers; we just may not PING
    except (rex.ConnectionError, rex.TimeoutError, trio.TooSlowError, OSError, ssl.SSLError):
        return False
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


async def _wait(url: str, timeout: float, alive: Callable[[], bool]) -> Answer:
    deadline = trio.current_time() + timeout
    delay = 0.002
    while True:
        if not alive():
            return Answer.EXITED
        if await answers(url):
            return Answer.READY
        if trio.current_time() > deadline:
            return Answer.TIMEOUT
        await trio.sleep(delay)
        delay = min(delay * 2, 0.05)


def wait_answers(url: str, timeout: float, alive: Callable[[], bool]) -> Answer:
    """Block until the server at ``url`` answers, its process exits, or ``timeout`` passes."""
    return run_in_thread(_wait, url, timeout, alive)
