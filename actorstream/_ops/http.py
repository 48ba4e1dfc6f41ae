"""A small trio-native HTTP/1.1 server for probes and scrapes (no thread, no extra package).

It answers ``GET``/``HEAD`` on a fixed set of paths, one request per connection
(``Connection: close``). Requests are bounded in size (8 KiB of head, no body) and time
(5 s to send the head), so a slow or hostile client cannot hold the worker's resources.
Runs as a task in the worker's nursery: cancelled with it, and ``/healthz`` answering proves
the trio loop itself answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import attrs
import trio
from attrs import frozen

from .._core.errors import ConfigError

log = logging.getLogger("actorstream.ops")

MAX_HEAD: Final = 8192
HEAD_TIMEOUT: Final = 5.0
WRITE_TIMEOUT: Final = 10.0
REASONS: Final = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}


@frozen
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = attrs.field(default=())

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, (text + "\n").encode())


Route = Callable[[], Awaitable[Response]]


def _render(response: Response, *, head_only: bool) -> bytes:
    reason = REASONS.get(response.status, "Unknown")
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        *(f"{k}: {v}" for k, v in response.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """The request head (up to the blank line); None if too large."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        if len(buf) > MAX_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def _dispatch(head: bytes, routes: Mapping[str, Route]) -> tuple[Response, bool]:
    """The response to one request head, and whether to omit the body (HEAD)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1", "replace")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return Response.text(400, "bad request"), False
    method, target = parts[0], parts[1]
    path = target.split("?", 1)[0]
    route = routes.get(path)
    if method not in ("GET", "HEAD"):
        return Response(405, b"", headers=(("Allow", "GET, HEAD"),)), False
    if route is None:
        return Response.text(404, f"not found; try {', '.join(sorted(routes))}"), False
    try:
        return await route(), method == "HEAD"
    except Exception:
        log.exception("ops endpoint %s failed", path)
        return Response.text(500, "internal error (see the worker's log)"), False


async def _respond(stream: trio.abc.Stream, routes: Mapping[str, Route]) -> None:
    head: bytes | None = None
    timed_out = True
    with trio.move_on_after(HEAD_TIMEOUT):
        head = await _read_head(stream)
        timed_out = False
    head_only = False
    if timed_out:
        response = Response.text(408, "request timeout")
    elif head is None:
        response = Response.text(431, "request head too large")
    else:
        response, head_only = await _dispatch(head, routes)
    with trio.move_on_after(WRITE_TIMEOUT):
        await stream.send_all(_render(response, head_only=head_only))


async def _connection(stream: trio.SocketStream, routes: Mapping[str, Route]) -> None:
    try:
        await _respond(stream, routes)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("ops endpoint: client went away: %s", exc)
    except Exception:
        # A probe endpoint must never take the worker down with it.
        log.exception("ops endpoint: request failed")
    finally:
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            await stream.aclose()


async def serve_http(
    routes: Mapping[str, Route],
    port: int,
    host: str = "0.0.0.0",
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` on ``host:port`` until cancelled; ``nursery.start`` gives the port."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        # Not "Redis unreachable" (the CLI's reading of a bare OSError): a config problem.
        raise ConfigError(f"metrics port {host}:{port}: {exc.strerror or exc}") from None
    bound = listeners[0].socket.getsockname()[1]
    log.info("serving %s on http://%s:%d", ", ".join(sorted(routes)), host, bound)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            trio.serve_listeners,
            lambda s: _connection(s, routes),
            listeners,
        )
        task_status.started(bound)


async def http_get(host: str, port: int, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """A minimal GET for our own endpoints (the ``--processes`` parent scraping its children).

    Bounded in time and size (16 MiB); raises ``OSError``/``trio.TooSlowError`` on failure.
    """
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode("latin-1"))
            buf = bytearray()
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 16 * 1024 * 1024:
                    raise OSError("response too large")
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"bad HTTP response from {host}:{port}{path}") from None
    return status, body
