"""System: the declaration API's root (streams, actors, producers, tasks) and ``start()``.

``start()`` hands the declarations, as a frozen ``WorkerPlan``, to the root of the worker's
supervision tree (``actorstream._tree.root``); nothing in the tree imports this module back.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, tzinfo
from functools import partial
from typing import Any, TypeVar, overload

import trio

from ._actors import ActorSettings, ActorSpec, Form
from ._core import keys as _keys
from ._core.errors import ConfigError
from ._core.exits import EXIT_INTERRUPTED, classify_exit
from ._core.settings import Settings
from ._core.windows import WindowSpec
from ._middleware import ErrorHook, Middleware
from ._ops.logs import configure_logging
from ._punctuate import punctuate
from ._records import Record
from ._redis import RedisClient, run_client
from ._signature import check_handler
from ._streams import Retention, Stream
from ._tables import MISSING, Table
from ._transport import Client, default_client_name, redact_url
from ._tree.root import Worker, WorkerPlan
from ._tree.scheduler import TaskSpec, time_zone
from ._tree.startup import (
    exit_with,
    is_main_task,
    plain_error,
    run_owning_signals,
    say,
    wait_for_redis_or_signal,
)
from ._tree.telemetry import WorkerStatistics
from ._windows import WindowedTable, check_windowed_actor

__all__ = ["DEFAULT_URL", "Settings", "System", "WorkerStatistics", "default_redis_url", "running"]

log = logging.getLogger("actorstream")

R = TypeVar("R", bound=Record)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
M = TypeVar("M", bound=Middleware)
T = TypeVar("T", bound=Callable[[], Awaitable[Any]])
V = TypeVar("V")

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def default_redis_url() -> str:
    """The URL of a System given none in code (the one rule: docs/redis-url.md)."""
    return os.environ.get("ACTORSTREAM_REDIS_URL") or DEFAULT_URL


class System:
    """An application: its streams and actors. ``trio.run(system.start)`` runs one worker."""

    def __init__(
        self,
        name: str,
        redis_url: str | None = None,
        *,
        client_name: str | None = None,
        **settings: Any,
    ) -> None:
        _keys.check_name("system", name)
        self.name = name
        self.redis_url = redis_url or default_redis_url()
        self._client_name = client_name
        try:
            self.settings = Settings(**settings)
        except TypeError as exc:
            raise ConfigError(f"System({name!r}): {exc}") from None
        self.streams: dict[str, Stream[Any]] = {}
        self.actors: dict[str, ActorSpec] = {}
        self.tables: dict[str, Table[Any]] = {}
        self._client: Client | None = None
        self._redis = RedisClient(self.client)
        self._worker: Worker | None = None
        self._context_depth = 0
        self._scheduled: list[Any] = []
        self._middleware: list[Middleware] = []
        # Where /metrics, /healthz, /readyz are served while it runs (``metrics_port``).
        self.ops_port: int | None = None
        # True after a worker of this system was stopped by a second signal (no full drain).
        self.forced_exit = False

    def __repr__(self) -> str:
        return f"<System {self.name} at {redact_url(self.redis_url)}>"

    # -- declarations -------------------------------------------------------------------------

    @overload
    def stream(
        self,
        name: str,
        *,
        record: type[R],
        partitions: int = ...,
        key: str | Callable[[R], object] | None = ...,
        codec: str = ...,
        compression: str = ...,
        max_payload_bytes: int = ...,
        retention: Retention | None = ...,
        time: str | Callable[[R], float | datetime] | None = ...,
    ) -> Stream[R]: ...

    @overload
    def stream(
        self,
        name: str,
        *,
        record: None = ...,
        partitions: int = ...,
        key: str | Callable[[dict[str, Any]], object] | None = ...,
        codec: str = ...,
        compression: str = ...,
        max_payload_bytes: int = ...,
        retention: Retention | None = ...,
        time: str | Callable[[dict[str, Any]], float | datetime] | None = ...,
    ) -> Stream[dict[str, Any]]: ...

    def stream(
        self,
        name: str,
        *,
        record: type[Any] | None = None,
        partitions: int = 1,
        key: Any = None,
        codec: str = "json",
        compression: str = "none",
        max_payload_bytes: int = 1_048_576,
        retention: Retention | None = None,
        time: str | Callable[[Any], float | datetime] | None = None,
    ) -> Stream[Any]:
        """Declare a stream. ``record=None`` carries plain dict events (vomero style).

        ``time``: the event time windows use, a field (epoch seconds or a datetime) or a
        function of the event; None takes the entry id's timestamp (when Redis appended it).
        """
        if name in self.streams:
            raise ConfigError(f"stream {name!r} is already declared in system {self.name!r}")
        stream: Stream[Any] = Stream(
            self, name, record=record, partitions=partitions, key=key, codec=codec,
            compression=compression, max_payload_bytes=max_payload_bytes, retention=retention,
            time=time,
        )
        self.streams[name] = stream
        return stream

    def actor(
        self,
        stream: Stream[Any],
        *,
        name: str | None = None,
        batch: bool = False,
        iterator: bool = False,
        on_error: ErrorHook | None = None,
        middleware: Sequence[Middleware] = (),
        tables: Sequence[Table[Any]] = (),
        processing: str = "at_least_once",
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        **settings: Any,
    ) -> Callable[[F], F]:
        """Declare an actor on a stream: one partition actor per partition, across all workers.

        ``batch=True``: the handler takes a list of events. ``iterator=True``: the handler takes
        an ``Events`` async iterator. Settings: see ``ActorSettings``. ``middleware`` and
        ``on_error``: see ``actorstream._middleware`` (docs/features.md). ``tables``: the
        tables this actor writes, committed with its acks; ``processing="exactly_once"``: the
        events its handler sends are committed with them too; ``wait_replicas``: WAIT for that
        many replicas after each commit (docs/state.md).
        """
        if not isinstance(stream, Stream) or stream.system is not self:
            raise ConfigError(f"actor: {stream!r} is not a stream of system {self.name!r}")
        if batch and iterator:
            raise ConfigError("actor: choose at most one of batch=True and iterator=True")
        try:
            actor_settings = ActorSettings(**settings)
        except TypeError as exc:
            raise ConfigError(f"actor: {exc}") from None

        def decorate(fn: F) -> F:
            actor_name: str = name or str(getattr(fn, "__name__", ""))
            if actor_name in self.actors:
                raise ConfigError(f"actor {actor_name!r} is already declared")
            form = Form.BATCH if batch else Form.ITERATOR if iterator else Form.EVENT
            check_handler(fn, actor=actor_name, form=form.value, stream=stream.name,
                          record=stream.record)
            spec = ActorSpec(
                name=actor_name,
                stream=stream,
                handler=fn,
                form=form,
                settings=actor_settings,
                on_error=on_error,
                middleware=tuple(middleware),
                tables=tuple(tables),
                processing=processing,
                wait_replicas=wait_replicas,
                wait_timeout=wait_timeout,
            )
            check_windowed_actor(spec)
            self._bind_tables(actor_name, stream, tables)
            self.actors[actor_name] = spec
            return fn

        return decorate

    def _bind_tables(self, actor: str, stream: Stream[Any], tables: Sequence[Any]) -> None:
        for table in tables:
            if not isinstance(table, Table) or table.system is not self:
                raise ConfigError(f"actor {actor!r}: {table!r} is not a table of system "
                                  f"{self.name!r}")
            table.check_writer(actor)
        for table in tables:
            table.bind(actor, stream)

    def table(
        self,
        name: str,
        *,
        value: type[V],
        default: Any = MISSING,
        codec: str = "json",
        window: WindowSpec | None = None,
        retention: float = 0.0,
        merge: Callable[[Any, Any], Any] | None = None,
        idle: float | None = None,
    ) -> Table[V]:
        """Declare a table: per-key state of one actor, kept beside its partitions and committed
        with its acks (docs/state.md). ``value``: int, float, str, bool or a Record subclass;
        ``default``: the value of a missing key, or a zero-argument callable making it.

        ``window``: ``Tumbling``, ``Hopping`` or ``Session``: values per key and window of event
        time, each closed window emitted once (``retention``, ``merge``, ``idle``:
        docs/windows.md)."""
        if name in self.tables:
            raise ConfigError(f"table {name!r} is already declared in system {self.name!r}")
        table: Table[V]
        if window is None:
            if retention or merge is not None or idle is not None:
                raise ConfigError(f"table {name!r}: retention=, merge= and idle= apply to "
                                  "windowed tables (pass window=...)")  # fmt: skip
            table = Table(self, name, value=value, default=default, codec=codec)
        else:
            table = WindowedTable(self, name, value=value, default=default, codec=codec,
                                  window=window, retention=retention, merge=merge,
                                  idle=idle)  # fmt: skip
        self.tables[name] = table
        return table

    punctuate = punctuate

    def middleware(self, mw: M) -> M:
        """Register middleware around the handler of every event- and batch-form actor
        (outermost first). An iterator-form handler takes all of its partition's events in one
        call, so there is no per-event call to wrap (docs/features.md)."""
        if not callable(mw):
            raise ConfigError(f"middleware {mw!r} is not callable")
        self._middleware.append(mw)
        return mw

    # -- background work ----------------------------------------------------------------------

    def _schedule(self, spec: TaskSpec) -> None:
        if any(s.name == spec.name for s in self._scheduled):
            raise ConfigError(f"task {spec.name!r} is already declared")
        if not inspect.iscoroutinefunction(spec.fn):
            raise ConfigError(f"task {spec.name!r}: must be an `async def` function")
        self._scheduled.append(spec)

    def task(
        self, fn: T | None = None, *, name: str | None = None, leader_only: bool = False
    ) -> Any:
        """A background task for the life of each worker (or of the leader), supervised."""

        def decorate(f: T) -> T:
            self._schedule(TaskSpec(name or f.__name__, f, "task", leader_only=leader_only))
            return f

        return decorate(fn) if fn is not None else decorate

    def timer(
        self,
        *,
        every: float,
        name: str | None = None,
        leader_only: bool = False,
        overlap: bool = False,
    ) -> Callable[[T], T]:
        """Run every ``every`` seconds; a slow run is not overlapped unless ``overlap=True``."""

        def decorate(f: T) -> T:
            self._schedule(TaskSpec(name or f.__name__, f, "timer", every=every,
                                    leader_only=leader_only, overlap=overlap))
            return f

        return decorate

    def cron(
        self,
        expr: str,
        *,
        tz: str | tzinfo = "UTC",
        name: str | None = None,
        leader_only: bool = False,
        overlap: bool = False,
    ) -> Callable[[T], T]:
        """Run at the times of a cron expression (``"*/5 * * * *"``) in time zone ``tz``."""
        zone = time_zone(tz)

        def decorate(f: T) -> T:
            self._schedule(TaskSpec(name or f.__name__, f, "cron", cron=expr, tz=zone,
                                    leader_only=leader_only, overlap=overlap))
            return f

        return decorate

    def producer(self, stream: Stream[Any]) -> Callable[[F], F]:
        """Decorate an async function whose returned event (or list of events) is sent."""

        def decorate(fn: F) -> F:
            return stream.producer(fn)  # type: ignore[return-value]

        return decorate

    # -- clients ------------------------------------------------------------------------------

    def client(self) -> Client:
        """The client of the running worker or of ``async with system``; else one per trio run."""
        if self._worker is not None:
            return self._worker.client
        if self._client is not None:
            return self._client
        return run_client(self, partial(self._new_client, "producer"))

    @property
    def redis(self) -> RedisClient:
        """Redis for handlers, tasks and producers, on this System's connection pool."""
        return self._redis

    def _new_client(self, role: str) -> Client:
        return Client.from_url(
            self.redis_url,
            client_name=self._client_name or default_client_name(f"{self.name}:{role}"),
            max_connections=self.settings.max_connections,
        )

    async def __aenter__(self) -> System:
        if self._client is None:
            self._client = self._new_client("producer")
        self._context_depth += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._context_depth -= 1
        if self._context_depth == 0 and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- running ------------------------------------------------------------------------------

    async def start(
        self,
        *,
        task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run a worker until SIGINT/SIGTERM (or cancellation); ``nursery.start`` gives a Worker.

        A first signal drains gracefully (finish in-flight events, ack, release leases); a
        second one cancels at once. Raises ``SupervisorGaveUp`` when the system gave up.
        With ``metrics_port`` set, /metrics, /healthz and /readyz are served from the start
        (also while waiting for Redis) to the end (docs/operations.md).

        Bad configuration and a Redis that refuses us raise one plain exception; when this is
        the program's main task (``trio.run(system.start)``) with signal handlers installed,
        it prints the one line ``actorstream worker`` prints and exits with the same code
        (docs/running.md, "Exit codes"; ``ACTORSTREAM_TRACEBACK=1`` adds the traceback).
        """
        owns_process = self.settings.install_signal_handlers and is_main_task()
        if owns_process and not logging.getLogger().handlers:
            configure_logging()  # `python app.py`: the CLI's format, not Python's bare lines
        try:
            if owns_process:
                await run_owning_signals(partial(self._start_serving, task_status=task_status),
                                         self._on_late_signal)
            else:
                await self._start_serving(task_status=task_status)
        except Exception as exc:
            found = classify_exit(exc, redact_url(self.redis_url))
            if found is None:
                raise
            if owns_process:
                # `python app.py` ends as `actorstream worker` does: one line, its exit code.
                exit_with(found, exc)
            error = plain_error(found, exc)
            raise error from error.__cause__  # its own cause (a SupervisorGaveUp's crashes)
        if owns_process and self.forced_exit:
            raise SystemExit(EXIT_INTERRUPTED)

    def _on_late_signal(self) -> bool:
        """A signal the worker's own watcher did not get: True to stop at once."""
        worker = self._worker
        if worker is not None and not worker.stopping:
            worker.request_stop()
            return False
        self.forced_exit = True
        return True

    async def _start_serving(self, *, task_status: trio.TaskStatus[Worker]) -> None:
        if self.settings.metrics_port is None:
            await self._start(task_status=task_status)
            return
        from ._endpoints.server import serve_ops

        async with trio.open_nursery() as nursery:
            self.ops_port = await nursery.start(
                functools.partial(serve_ops, streams=tuple(self.streams)),
                self.name, lambda: self._worker, self.settings.metrics_port,
                self.settings.metrics_host,
            )
            try:
                await self._start(task_status=task_status)
            finally:
                self.ops_port = None
            nursery.cancel_scope.cancel()

    async def _start(self, *, task_status: trio.TaskStatus[Worker]) -> None:
        if self._worker is not None:
            raise RuntimeError(f"system {self.name!r} is already running in this process")
        if not self.actors:
            log.warning("system %r has no actors; this worker will only hold membership", self.name)
        # Redis down at start: wait and say so once; the same lines for `python app.py` and
        # `actorstream worker` (docs/running.md, "Starting").
        owns_process = self.settings.install_signal_handlers
        url = redact_url(self.redis_url)
        if not await wait_for_redis_or_signal(
            self.redis_url, announce=owns_process, signals=owns_process
        ):
            say(f"worker of {self.name!r} stopped before Redis answered", announce=owns_process)
            return
        worker = Worker(self._plan())
        self._worker = worker
        say(f"worker of {self.name!r} (pid {os.getpid()}) on {url}, {len(self.actors)} "
            "actor(s); Ctrl-C to stop", announce=owns_process)
        try:
            async with worker.client:
                await worker.run(task_status=task_status)
        finally:
            self._worker = None
            if worker.forced:
                self.forced_exit = True
        how = " by a second signal" if worker.forced else ""
        say(f"worker of {self.name!r} stopped{how}", announce=owns_process)

    def _plan(self) -> WorkerPlan:
        return WorkerPlan(
            app=self.name,
            settings=self.settings,
            actors=dict(self.actors),
            streams=tuple(self.streams.values()),
            tasks=tuple(self._scheduled),
            middleware=tuple(self._middleware),
            new_client=self._new_client,
        )

    def statistics(self) -> WorkerStatistics | None:
        return self._worker.statistics() if self._worker is not None else None


@asynccontextmanager
async def running(system: System) -> AsyncIterator[Worker]:
    """Run a worker for the duration of a block (tests, embedding); stops it gracefully."""
    async with trio.open_nursery() as nursery:
        worker: Worker = await nursery.start(system.start)
        try:
            yield worker
        finally:
            worker.request_stop()
