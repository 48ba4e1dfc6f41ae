"""``FaultProxy``: a TCP proxy that injects network faults between a client and a Redis."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio
from attrs import frozen

from .._servers.process import START_TIMEOUT, Managed
from .proxy_link import Faults, Link

__all__ = ["FaultProxy", "ProxyStatistics"]

T = TypeVar("T")


@frozen
class ProxyStatistics:
    """A snapshot of a ``FaultProxy``.

    ``connections`` are open now (black-holed ones included); ``buffered_bytes`` were read from
    one side and not yet delivered to the other (held by a partition or by latency).
    """

    connections: int
    accepted: int
    blackholed: int
    buffered_bytes: int
    delivered_bytes: int
    resets: int
    partitioned: bool
    latency_ms: float
    jitter_ms: float
    bandwidth: float | None


class FaultProxy(Managed):
    """A TCP proxy in front of one Redis, with network faults switched on and off at run time.

    Give the worker under test ``proxy.url`` instead of the Redis URL: the same URL (user,
    password, database, TLS options) with the proxy's address. The faults:

    - ``partition()``: bytes are held in both directions, and new connections hang; nothing is
      closed, like a cable pulled out. ``heal()`` delivers everything held, in order, and lets
      the hanging connections through: late replies to old requests, as TCP would deliver them.
    - ``blackhole()``: every open connection (and every one made until ``heal()``) goes silent
      for good: never delivered, never closed, a half-open socket, like a NAT or a load balancer
      that forgot the connection. Only new connections after ``heal()`` work.
    - ``reset()``: every open connection is closed with a TCP RST (both sides): the client sees
      ``ECONNRESET``. New connections work at once.
    - ``latency(ms, jitter_ms)``: every chunk of bytes is delayed ``ms`` +- ``jitter_ms`` in each
      direction (a round trip gains twice that), order kept. ``latency(0)`` ends it.
    - ``bandwidth(bytes_per_s)``: each direction of each connection is paced to that rate.
      ``bandwidth(None)`` ends it.

    Use it as a context manager: ``with FaultProxy(url) as proxy`` runs the proxy's trio loop in
    a thread (for synchronous tests, or trio tests that prefer it), ``async with`` runs it in the
    caller's trio loop. The switches are plain methods, callable from either. One Redis node:
    a Cluster's redirections would point past the proxy.
    """

    def __init__(
        self, target_url: str, *, host: str = "127.0.0.1", port: int = 0, seed: int | None = None
    ) -> None:
        parts = urlsplit(target_url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                "FaultProxy forwards TCP: give it a redis:// or rediss:// URL, "
                f"not {parts.scheme!r}"
            )
        self._target = parts
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 6379
        self.host = host
        self._fixed_port = port
        self._port: int | None = None
        self._seed = seed
        self._faults: Faults | None = None
        self._links: set[Link] = set()
        self._accepted = 0
        #: Unexpected failures of single connections (the proxy itself carries on).
        self.errors: list[Exception] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._stop: trio.Event | None = None
        self._stack: AsyncExitStack | None = None
        self._closed = False

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the FaultProxy has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The target URL with the proxy's host and port: what the client under test gets."""
        parts = self._target
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if "@" in parts.netloc else ""
        netloc += f"{self.host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # -- the faults ------------------------------------------------------------------------

    def partition(self) -> None:
        """Hold bytes in both directions; new connections hang until ``heal()``."""
        self._call(self._set, partitioned=True)

    def heal(self) -> None:
        """End a partition or a black hole: held bytes are delivered in order; black-holed
        connections stay silent for good."""
        self._call(self._set, partitioned=False, blackholing=False)

    def blackhole(self) -> None:
        """Make every connection half-open: never delivered, never closed (see the class doc)."""
        self._call(self._blackhole)

    def reset(self) -> None:
        """Close every open connection with RST, both sides."""
        self._call(self._reset)

    def latency(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Delay every chunk ``ms`` +- ``jitter_ms`` milliseconds, in each direction."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError(f"latency and jitter must be >= 0 ms, got {ms} and {jitter_ms}")
        self._call(self._set, latency=ms / 1000, jitter=min(jitter_ms, ms) / 1000)

    def bandwidth(self, bytes_per_s: float | None) -> None:
        """Pace each direction of each connection to ``bytes_per_s``; None lifts the limit."""
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s (or None), got {bytes_per_s}")
        self._call(self._set, rate=None if bytes_per_s is None else float(bytes_per_s))

    def statistics(self) -> ProxyStatistics:
        return self._call(self._statistics)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Run the proxy's trio loop in a thread; returns once it listens."""
        self._check_startable()
        ready = threading.Event()
        failure: list[BaseException] = []

        def target() -> None:
            try:
                trio.run(self._run_in_thread, ready)
            except BaseException as exc:  # handed over to start(), or ends the thread quietly
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=target, name="actorstream-fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the FaultProxy did not start listening within {timeout}s")
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"the FaultProxy could not start: {failure[0]!r}") from failure[0]
        return self

    def close(self) -> None:
        """Stop the thread-run proxy, closing every connection (black-holed ones too)."""
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        thread.join(START_TIMEOUT)

    async def __aenter__(self) -> Self:
        """Serve in the caller's trio loop, in a nursery of the caller's task."""
        self._check_startable()
        async with AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(self._serve)
            stack.callback(nursery.cancel_scope.cancel)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True
        stack, self._stack = self._stack, None
        if stack is not None:
            # The body's exception is not handed to the nursery (which would wrap it in a
            # group): it is re-raised as it is, after the proxy's tasks are cancelled.
            await stack.aclose()

    # -- internals -------------------------------------------------------------------------

    def _check_startable(self) -> None:
        if self._closed:
            raise RuntimeError("this FaultProxy was closed; make a new one")
        if self._port is not None:
            raise RuntimeError("this FaultProxy is already running")

    async def _run_in_thread(self, ready: threading.Event) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._serve)
            ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._faults = Faults(self._seed)
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        listeners = await trio.open_tcp_listeners(self._fixed_port, host=self.host)
        self._port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started()
        finally:
            for link in list(self._links):
                link.close()

    async def _handle(self, client: trio.SocketStream) -> None:
        assert self._faults is not None
        link = Link(self._faults, client)
        self._links.add(link)
        self._accepted += 1
        try:
            await link.run(self.target_host, self.target_port)
        except Exception as exc:  # one connection's bug must not take the proxy down
            self.errors.append(exc)
        finally:
            self._links.discard(link)

    def _call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """Run ``fn`` in the proxy's loop: directly from its thread, else handed over."""
        token = self._token
        if token is None:
            raise RuntimeError("the FaultProxy is not running")
        if threading.get_ident() == self._loop_thread:
            return fn(**kwargs)
        done = threading.Event()
        result: list[Any] = []

        def run() -> None:
            try:
                result.append(("ok", fn(**kwargs)))
            except Exception as exc:  # handed over to the calling thread
                result.append(("error", exc))
            done.set()

        try:
            token.run_sync_soon(run)
        except trio.RunFinishedError:
            raise RuntimeError("the FaultProxy is not running") from None
        if not done.wait(START_TIMEOUT):
            raise RuntimeError("the FaultProxy's loop did not answer")
        kind, value = result[0]
        if kind == "error":
            raise value
        return value  # type: ignore[no-any-return]

    def _set(self, **values: Any) -> None:
        faults = self._require_faults()
        for name, value in values.items():
            setattr(faults, name, value)
        faults.changed()

    def _blackhole(self) -> None:
        faults = self._require_faults()
        faults.blackholing = True
        for link in self._links:
            link.blackholed = True
        faults.changed()

    def _reset(self) -> None:
        faults = self._require_faults()
        faults.resets += 1
        for link in list(self._links):
            link.reset()

    def _statistics(self) -> ProxyStatistics:
        faults = self._require_faults()
        links = list(self._links)
        return ProxyStatistics(
            connections=len(links),
            accepted=self._accepted,
            blackholed=sum(link.blackholed for link in links),
            buffered_bytes=sum(link.buffered for link in links),
            delivered_bytes=faults.delivered,
            resets=faults.resets,
            partitioned=faults.partitioned or faults.blackholing,
            latency_ms=faults.latency * 1000,
            jitter_ms=faults.jitter * 1000,
            bandwidth=faults.rate,
        )

    def _require_faults(self) -> Faults:
        if self._faults is None:
            raise RuntimeError("the FaultProxy is not running")
        return self._faults

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else "not started"
        return f"<FaultProxy {where} -> {self.target_host}:{self.target_port}>"
