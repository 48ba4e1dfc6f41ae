"""System: declarations (streams, actors, producers) and ``start()``, the root of a worker.

Supervision tree of one worker::

    System.start
    ├── coordinator          membership, fenced leases, rebalance (restarted if it crashes)
    ├── partitions           Supervisor(ONE_FOR_ONE): one partition actor per owned slot
    ├── scheduler            tasks, timers, cron
    └── telemetry            status snapshot for `actorstream top`, once a second
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import tzinfo
from types import TracebackType
from typing import Any, TypeVar, overload

import attrs
import trio
from attrs import frozen

from . import _keys
from ._actors import ActorSettings, ActorSpec, Form
from ._assignment import Slot
from ._coordinator import Coordinator, CoordinatorStatistics, OwnershipState
from ._deadletter import DeadLetters
from ._errors import ConfigError, SupervisorGaveUp
from ._leasetiming import LeaseTiming
from ._middleware import ErrorHook, Middleware
from ._partition import Counters, Fence, PartitionActor, PartitionStatistics, snapshot
from ._policy import RestartPolicy
from ._records import Record
from ._scheduler import Leadership, TaskSpec, _zone, run_scheduler
from ._streams import Retention, Stream
from ._supervisor import ChildContext, Restart, Strategy, Supervisor, SupervisorStatistics
from ._transport import Client, default_client_name, redact_url

log = logging.getLogger("actorstream")

R = TypeVar("R", bound=Record)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
M = TypeVar("M", bound=Middleware)
T = TypeVar("T", bound=Callable[[], Awaitable[Any]])

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def default_redis_url() -> str:
    """The URL of a System given none in code (the one rule: docs/redis-url.md)."""
    return os.environ.get("ACTORSTREAM_REDIS_URL") or DEFAULT_URL


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive number, got {value!r}")


@frozen
class Settings:
    """Worker-wide settings; everything has a default and is validated here."""

    lease_timing: LeaseTiming = attrs.field(factory=LeaseTiming)
    restart_policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    shutdown_grace: float = attrs.field(default=30.0, validator=_positive)
    max_connections: int = attrs.field(default=32, validator=_positive)
    telemetry_interval: float = attrs.field(default=1.0, validator=_positive)
    dead_letter_maxlen: int = attrs.field(default=0)
    install_signal_handlers: bool = True


@frozen
class WorkerStatistics:
    worker_id: str
    host: str
    pid: int
    uptime: float
    coordinator: CoordinatorStatistics
    partitions: tuple[PartitionStatistics, ...]
    supervisor: SupervisorStatistics
    dead_lettered: int


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
        self._client: Client | None = None
        self._runtime: Runtime | None = None
        self._context_depth = 0
        self._scheduled: list[Any] = []
        self._middleware: list[Middleware] = []
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
    ) -> Stream[Any]:
        """Declare a stream. ``record=None`` carries plain dict events (vomero style)."""
        if name in self.streams:
            raise ConfigError(f"stream {name!r} is already declared in system {self.name!r}")
        stream: Stream[Any] = Stream(
            self,
            name,
            record=record,
            partitions=partitions,
            key=key,
            codec=codec,
            compression=compression,
            max_payload_bytes=max_payload_bytes,
            retention=retention,
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
        **settings: Any,
    ) -> Callable[[F], F]:
        """Declare an actor on a stream: one partition actor per partition, across all workers.

        ``batch=True``: the handler takes a list of events. ``iterator=True``: the handler takes
        an ``Events`` async iterator. Settings: see ``ActorSettings``. ``middleware`` and
        ``on_error``: see ``actorstream._middleware`` (docs/features.md).
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
            self.actors[actor_name] = ActorSpec(
                name=actor_name,
                stream=stream,
                handler=fn,
                form=form,
                settings=actor_settings,
                on_error=on_error,
                middleware=tuple(middleware),
            )
            return fn

        return decorate

    def middleware(self, mw: M) -> M:
        """Register middleware around every actor's handler (outermost first)."""
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
        zone = _zone(tz)

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
        if self._runtime is not None:
            return self._runtime.client
        if self._client is not None:
            return self._client
        try:
            return _RUN_CLIENTS.get()[self]
        except (LookupError, KeyError):
            pass
        try:
            table = _RUN_CLIENTS.get()
        except LookupError:
            table = {}
            _RUN_CLIENTS.set(table)
        client = self._new_client("producer")
        table[self] = client
        # Nobody owns this client: close its sockets when the trio run ends (system tasks are
        # cancelled once the main task has returned), instead of leaving them to the GC.
        trio.lowlevel.spawn_system_task(
            _close_at_run_end, client, name="actorstream: close the producer client"
        )
        return client

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._context_depth -= 1
        if self._context_depth == 0 and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- running ------------------------------------------------------------------------------

    async def start(
        self,
        *,
        task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run a worker until SIGINT/SIGTERM (or cancellation); ``nursery.start`` gives a Runtime.

        A first signal drains gracefully (finish in-flight events, ack, release leases); a
        second one cancels at once. Raises ``SupervisorGaveUp`` when the system gave up.
        """
        if self._runtime is not None:
            raise RuntimeError(f"system {self.name!r} is already running in this process")
        if not self.actors:
            log.warning("system %r has no actors; this worker will only hold membership", self.name)
        runtime = Runtime(self)
        self._runtime = runtime
        try:
            async with runtime.client:
                await runtime.run(task_status=task_status)
        finally:
            self._runtime = None

    def statistics(self) -> WorkerStatistics | None:
        return self._runtime.statistics() if self._runtime is not None else None


async def _close_at_run_end(client: Client) -> None:
    try:
        await trio.sleep_forever()
    finally:
        client.close_nowait()


_RUN_CLIENTS: trio.lowlevel.RunVar[dict[System, Client]] = trio.lowlevel.RunVar(
    "actorstream_clients"
)


class PartitionManager:
    """Starts and stops partition actors under the partitions supervisor, as leases change."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.supervisor = Supervisor(
            "partitions",
            strategy=Strategy.ONE_FOR_ONE,
            policy=runtime.settings.restart_policy,
        )
        self.counters: dict[Slot, Counters] = {}
        self._nursery: trio.Nursery | None = None

    def running(self, slot: Slot) -> bool:
        return slot in self.supervisor.children()

    def start(self, slot: Slot, fence: Fence) -> None:
        rt = self.runtime
        spec = rt.system.actors[slot.actor]
        counters = self.counters.setdefault(slot, Counters())
        counters.epoch = fence.epoch

        async def child(ctx: ChildContext) -> None:
            actor = PartitionActor(
                rt,
                spec,
                slot.partition,
                fence,
                counters,
                on_fenced=functools.partial(rt.coordinator.on_fenced, slot),
            )
            await actor.run(ctx)

        if self.running(slot):
            # The coordinator only acquires slots with no running actor; say so if that breaks.
            log.warning("partition actor %s[%d] is still running; not started twice",
                        slot.actor, slot.partition)
            return
        self.supervisor.start_child(slot, child, restart=Restart.TRANSIENT)

    async def stop(self, slot: Slot, *, grace: float) -> None:
        if self.running(slot):
            await self.supervisor.stop_child(slot, grace=grace)

    def stop_soon(self, slot: Slot, *, grace: float) -> None:
        if self._nursery is not None and self.running(slot):
            self._nursery.start_soon(functools.partial(self.stop, slot, grace=grace))

    async def stop_all(self, *, grace: float) -> None:
        async with trio.open_nursery() as n:
            for slot in list(self.supervisor.children()):
                assert isinstance(slot, Slot)
                n.start_soon(functools.partial(self.stop, slot, grace=grace))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.supervisor.run)
            task_status.started()


class Runtime:
    """One running worker of a System: the objects of its supervision tree."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.app = system.name
        self.settings = system.settings
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:8]}"
        self.started_at = trio.current_time()
        self.started_wall_ms = int(time.time() * 1000)
        self.client = system._new_client("worker")
        self.ownership = OwnershipState()
        self.manager = PartitionManager(self)
        self.coordinator = Coordinator(self)
        self.dead_letters = DeadLetters(self, maxlen=self.settings.dead_letter_maxlen)
        self.leadership = Leadership(self)
        self.events: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=200)
        self._unpublished: list[tuple[float, str, str]] = []
        self.stopping = False
        self.forced = False  # a second signal cut the drain short
        self._stopping = trio.Event()
        self.gave_up: BaseException | None = None

    def slots(self) -> list[Slot]:
        return sorted(
            Slot(spec.name, p)
            for spec in self.system.actors.values()
            for p in range(spec.stream.partitions)
        )

    def stream_of(self, actor: str) -> str:
        return self.system.actors[actor].stream.name

    def report(self, kind: str, message: str) -> None:
        """Record a notable event (crash, restart, rebalance, fence, dead letter) for `top`."""
        item = (time.time(), kind, message)
        self.events.append(item)
        self._unpublished.append(item)
        if len(self._unpublished) > 200:
            del self._unpublished[:-200]

    def take_unpublished(self) -> list[tuple[float, str, str]]:
        items, self._unpublished = self._unpublished, []
        return items

    async def wait_stopping(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        """Begin a graceful stop: drain partitions, release leases, leave, return."""
        self.stopping = True
        self._stopping.set()

    async def run(
        self, *, task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED
    ) -> None:
        from ._telemetry import publish_forever

        try:
            async with trio.open_nursery() as nursery:
                if self.settings.install_signal_handlers:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                await nursery.start(self.manager.run)
                await nursery.start(self._run_coordinator)
                nursery.start_soon(publish_forever, self)
                nursery.start_soon(run_scheduler, self)
                task_status.started(self)
                await self.wait_stopping()
                # The coordinator drains and leaves; then everything else is cancelled.
                await self._coordinator_done.wait()
                nursery.cancel_scope.cancel()
        except* SupervisorGaveUp as group:
            self.gave_up = group.exceptions[0]
            raise

    _coordinator_done: trio.Event

    async def _run_coordinator(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The coordinator under a small supervisor of its own: a bug there restarts it."""
        self._coordinator_done = trio.Event()
        policy = RestartPolicy(max_restarts=5, within=60.0)
        sup = Supervisor("coordinator", strategy=Strategy.ONE_FOR_ONE, policy=policy)
        first = trio.Event()

        async def child(ctx: ChildContext) -> None:
            async with trio.open_nursery() as n:
                await n.start(self.coordinator.run)
                first.set()
            # run() returned: the graceful leave is complete.
            self._coordinator_done.set()

        sup.start_child("coordinator", child, restart=Restart.TRANSIENT)
        async with trio.open_nursery() as n:
            n.start_soon(sup.run)
            await first.wait()
            task_status.started()
            await self._coordinator_done.wait()
            n.cancel_scope.cancel()

    async def _watch_signals(self, cancel_scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if not self.stopping:
                    log.info("received %s: draining (a second signal exits at once)",
                             signal.Signals(signum).name)
                    self.request_stop()
                else:
                    log.warning("second signal: exiting now")
                    self.forced = True
                    self.system.forced_exit = True
                    cancel_scope.cancel()
                    return

    def statistics(self) -> WorkerStatistics:
        parts = tuple(
            snapshot(self.system.actors[slot.actor], slot.partition, c)
            for slot, c in sorted(self.manager.counters.items())
        )
        return WorkerStatistics(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.pid,
            uptime=trio.current_time() - self.started_at,
            coordinator=self.coordinator.statistics(),
            partitions=parts,
            supervisor=self.manager.supervisor.statistics(),
            dead_lettered=self.dead_letters.moved,
        )


@asynccontextmanager
async def running(system: System) -> AsyncIterator[Runtime]:
    """Run a worker for the duration of a block (tests, embedding); stops it gracefully."""
    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(system.start)
        try:
            yield runtime
        finally:
            runtime.request_stop()
