"""One Redis connection over a trio stream, replies parsed by ``hiredis.Reader``.

A connection is either idle or carrying exactly one request (a command or a pipeline). If that
request ends any other way than with all of its replies read (cancellation, timeout, I/O error),
the connection is closed at once and marked broken: a late reply can then never be read by the
wrong caller.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import hiredis
import trio
from redis import exceptions as rex

from ._config import ConnectionConfig
from ._errors import reply_error

Arg = bytes | str | int | float | memoryview
#: A command's arguments; or the command in RESP already (``bytes``: ``pack_head``), which a
#: ``NodeConnection`` sends as it is (a Cluster's ``SlotConnection`` routes by arguments).
Command = Sequence[Arg]

_READ_SIZE = 1 << 16


def pack(command: Command) -> bytes:
    """Encode one command in RESP; hiredis does it in C. ``bytes`` is RESP already."""
    if type(command) is bytes:
        return command
    try:
        return hiredis.pack_command(tuple(command))  # type: ignore[arg-type,no-any-return]
    except TypeError as exc:
        raise rex.DataError(f"cannot encode command argument: {exc}") from None


def pack_head(head: Command) -> bytes:
    """The start of the RESP of a command whose arguments are ``head`` and one more, which
    ``pack_last`` adds. Many commands that differ only in their last argument (held outputs:
    ``XADD <key> * f <format> d <payload>``) are packed so about 4x faster than by ``pack``
    (hiredis formats every length with ``sprintf``)."""
    packed = pack(head)
    return b"*%d%b" % (len(head) + 1, packed[packed.index(b"\r\n"):])


def pack_last(head: bytes, last: bytes) -> bytes:
    """The RESP of a command: its head from ``pack_head``, then its last argument."""
    return b"%b$%d\r\n%b\r\n" % (head, len(last), last)


class Commands:
    """``execute`` and ``pipeline`` over one request primitive, ``_request``: what a
    ``NodeConnection`` and a Cluster ``SlotConnection`` share."""

    async def _request(self, commands: Sequence[Command], timeout: float | None) -> list[Any]:
        """Send ``commands`` (at least one) and return every reply, error replies in place."""
        raise NotImplementedError

    async def execute(self, *args: Arg, timeout: float | None = math.inf) -> Any:
        """Send one command; raise its error reply as an exception.

        ``timeout`` defaults to the URL's socket timeout; ``None`` waits forever (for BLOCK).
        """
        reply = (await self._request((args,), timeout))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def pipeline(
        self, commands: Sequence[Command], *, timeout: float | None = math.inf
    ) -> list[Any]:
        """Send all commands in one write and read all replies; error replies come back in place."""
        if not commands:
            return []
        return await self._request(commands, timeout)


class NodeConnection(Commands):
    """A single connection. Not safe for concurrent use; the pool hands it to one task at a time."""

    def __init__(self, stream: trio.abc.Stream, config: ConnectionConfig, name: str) -> None:
        self._stream = stream
        #: A plain TCP or Unix socket's descriptor (-1 under TLS): ``_exchange`` reads and
        #: writes it directly (see there).
        self._fd = stream.socket.fileno() if type(stream) is trio.SocketStream else -1
        self._config = config
        self._reader = hiredis.Reader(replyError=reply_error)
        self.name = name
        self.broken = False
        #: Broken by an I/O error or a timeout, not by a cancel: the server or the path to it is
        #: in doubt, so the pool drops its idle connections too (on a half-open path each of
        #: them would wait out a whole timeout in turn).
        self.lost = False
        self.created_at = trio.current_time()
        self.cluster_enabled: bool | None = None  # known if opened with probe_cluster

    @classmethod
    async def open(
        cls, config: ConnectionConfig, *, client_name: str, probe_cluster: bool = False
    ) -> NodeConnection:
        """Connect, then AUTH / SELECT / CLIENT SETNAME in one round trip.

        ``probe_cluster`` adds ``INFO cluster`` to that round trip and sets ``cluster_enabled``.
        """
        stream = await _open_stream(config)
        conn = cls(stream, config, client_name)
        setup: list[Command] = []
        if config.password is not None:
            if config.username:
                setup.append(("AUTH", config.username, config.password))
            else:
                setup.append(("AUTH", config.password))
        if config.db:
            setup.append(("SELECT", config.db))
        setup.append(("CLIENT", "SETNAME", client_name))
        if probe_cluster:
            setup.append(("INFO", "cluster"))
        try:
            replies = await conn.pipeline(setup, timeout=config.connect_timeout)
        except BaseException:
            await conn.aclose()
            raise
        if probe_cluster:
            info = replies.pop()
            # INFO may be refused to an ACL user: that user then talks to one Redis.
            conn.cluster_enabled = isinstance(info, bytes) and b"cluster_enabled:1" in info
        for reply in replies:
            if isinstance(reply, Exception):
                await conn.aclose()
                if isinstance(reply, rex.AuthenticationError):
                    who = config.username or "default"
                    raise rex.AuthenticationError(
                        f"authentication failed for user {who!r} at {config.describe()}: {reply}"
                    )
                raise reply
        return conn

    async def aclose(self) -> None:
        self.broken = True
        await trio.aclose_forcefully(self._stream)

    async def _request(self, commands: Sequence[Command], timeout: float | None) -> list[Any]:
        pack_command = hiredis.pack_command
        try:  # each a tuple of str, bytes, int or float (packed in C), or RESP already (bytes)
            payload = b"".join([
                c if type(c) is bytes else pack_command(c)  # type: ignore[arg-type]
                for c in commands
            ])
        except TypeError:  # an argument of another type (a list, a memoryview)
            payload = b"".join([pack(c) for c in commands])
        return await self._roundtrip(payload, len(commands), timeout)

    async def _roundtrip(self, payload: bytes, count: int, timeout: float | None) -> list[Any]:
        if self.broken:
            raise rex.ConnectionError("connection is closed")
        if timeout == math.inf:
            timeout = self._config.socket_timeout
        completed = False
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                replies = await self._exchange(payload, count)
                completed = True
                return replies
            self.lost = True
            raise rex.TimeoutError(
                f"no reply from {self._config.describe()} within {timeout:g}s"
            ) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.lost = True
            raise rex.ConnectionError(
                f"connection to {self._config.describe()} lost: {exc or type(exc).__name__}"
            ) from None
        except hiredis.ProtocolError as exc:
            raise rex.InvalidResponse(f"protocol error: {exc}") from None
        finally:
            if not completed:
                # Cancelled, timed out or failed mid-request: the reply may still arrive, so this
                # connection must never be read again. aclose_forcefully works while cancelled.
                await self.aclose()

    async def _exchange(self, payload: bytes, count: int) -> list[Any]:
        if self._fd >= 0:
            return await self._exchange_fd(payload, count)
        stream = self._stream
        reader = self._reader
        await stream.send_all(payload)
        replies: list[Any] = []
        while len(replies) < count:
            reply = reader.gets()
            if reply is False:
                data = await stream.receive_some(_READ_SIZE)
                if not data:
                    raise trio.BrokenResourceError("connection closed by the server")
                reader.feed(bytes(data) if type(data) is not bytes else data)
                continue
            replies.append(reply)
        return replies

    async def _exchange_fd(self, payload: bytes, count: int) -> list[Any]:
        """``_exchange`` on the socket's descriptor (non-blocking, as trio made it): one
        scheduling point per round trip (the wait for the reply) instead of trio's socket
        stream's two and its layers; measured to halve the worker's CPU per round trip
        (docs/design.md). Closing the stream wakes the wait (trio notifies waiters on the
        descriptor), and errors are the ``OSError`` that ``_roundtrip`` maps, as trio's."""
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled task sends nothing
        fd, reader, waited = self._fd, self._reader, False
        view = memoryview(payload)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:  # the socket's send buffer is full: wait for room
                await trio.lowlevel.wait_writable(fd)
                waited = True
        replies: list[Any] = []
        while len(replies) < count:
            reply = reader.gets()
            if reply is False:
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
                    waited = True
                    continue
                if not data:
                    raise trio.BrokenResourceError("connection closed by the server")
                reader.feed(data)
                continue
            replies.append(reply)
        if not waited:  # answered at once: still a scheduling point, as every request is
            await trio.lowlevel.cancel_shielded_checkpoint()
        return replies


async def _open_stream(config: ConnectionConfig) -> trio.abc.Stream:
    """The TCP (TLS after its handshake) or Unix socket stream, bounded by ``connect_timeout``."""
    try:
        with trio.fail_after(config.connect_timeout):
            stream: trio.abc.Stream
            if config.path is not None:
                stream = await trio.open_unix_socket(config.path)
            else:
                stream = await trio.open_tcp_stream(config.host, config.port)
                if config.tls:
                    ssl_stream = trio.SSLStream(
                        stream, config.ssl_context(), server_hostname=config.host
                    )
                    try:
                        await ssl_stream.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(ssl_stream)
                        raise
                    stream = ssl_stream
    except trio.TooSlowError:
        raise rex.TimeoutError(
            f"timed out connecting to {config.describe()} after {config.connect_timeout:g}s"
        ) from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise rex.ConnectionError(f"cannot connect to {config.describe()}: {exc}") from None
    return stream
