"""Streams: declaration, partitioning by key, and producers (``send``/``send_many``)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from attrs import frozen
from redis import exceptions as rex

from ._codecs import RecordFormat
from ._core import keys as _keys
from ._core.errors import ActorstreamError, ConfigError, DecodeError
from ._core.hashing import partition_for
from ._core.windows import entry_id_millis, event_time_millis
from ._ops import tracing as _tracing
from ._ops.sent import count_sent
from ._records import Record, check_record_type, record_field_type, record_fields
from ._scope import _SCOPE
from ._transport import Client, pack, pack_head

E = TypeVar("E")


class Owner(Protocol):
    """What a stream needs of the System that declared it: the app's name (its keys and
    telemetry) and the client to send with."""

    @property
    def name(self) -> str: ...

    def client(self) -> Client: ...


EventTime = str | Callable[[Any], float | datetime] | None

MAX_PIPELINE = 1000
KEY_CACHE_SIZE = 65536  # keys whose stream key a stream remembers (for sending)


class SendError(ActorstreamError):
    """Some events of a ``send_many`` were not written; says exactly which were.

    ``sent`` holds ``(index, entry_id)`` of the events that are in Redis, ``failed`` holds
    ``(index, exception)`` of those that are not. Nothing is retried behind your back.
    """

    def __init__(
        self,
        stream: str,
        sent: list[tuple[int, str]],
        failed: list[tuple[int, BaseException]],
    ) -> None:
        first = failed[0][1] if failed else None
        super().__init__(
            f"stream {stream!r}: {len(sent)} event(s) sent, {len(failed)} not sent"
            + (f" (first error: {type(first).__name__}: {first})" if first else "")
        )
        self.sent = sent
        self.failed = failed


@frozen
class Retention:
    """Safe stream trimming; the default keeps everything (no silent small cap).

    ``maxlen``: keep about this many entries per partition; ``max_age``: keep entries younger
    than this many seconds. Either way, the leader trims (every ``interval`` seconds, ``XTRIM
    MINID ~``) only below the lowest position every consumer group still needs: an entry that is
    pending for any group, or not yet delivered to one, is never removed. So retention bounds
    memory in steady state but never loses an unhandled event; a stalled group holds the stream.
    """

    maxlen: int | None = None
    max_age: float | None = None
    interval: float = 60.0

    def __attrs_post_init__(self) -> None:
        if self.maxlen is not None and (not isinstance(self.maxlen, int) or self.maxlen < 1):
            raise ConfigError(f"retention maxlen must be an integer >= 1, got {self.maxlen!r}")
        if self.max_age is not None and not self.max_age > 0:
            raise ConfigError(f"retention max_age must be > 0 seconds, got {self.max_age!r}")
        if not self.interval > 0:
            raise ConfigError(f"retention interval must be > 0 seconds, got {self.interval!r}")

    @property
    def enabled(self) -> bool:
        return self.maxlen is not None or self.max_age is not None


def _check_declaration(
    name: str, record: type[Any] | None, partitions: int, key: object
) -> type[Record] | None:
    """Reject a bad stream declaration with a message naming the stream and the value;
    returns ``record`` (checked)."""
    _keys.check_name("stream", name)
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise ConfigError(
            f"stream {name!r}: partitions must be an integer >= 1, got {partitions!r}"
        )
    if partitions > 4096:
        raise ConfigError(f"stream {name!r}: partitions must be at most 4096, got {partitions}")
    if record is not None:
        if not (isinstance(record, type) and issubclass(record, Record)):
            raise ConfigError(
                f"stream {name!r}: record must be a subclass of actorstream.Record "
                f"(or None for plain dict events), got {record!r}"
            )
        check_record_type(record)
    if isinstance(key, str):
        if record is not None and key not in record_fields(record):
            raise ConfigError(
                f"stream {name!r}: key field {key!r} is not a field of {record.__name__} "
                f"(fields: {', '.join(record_fields(record))})"
            )
    elif key is not None and not callable(key):
        raise ConfigError(
            f"stream {name!r}: key must be a field name, a callable or None, got {key!r}"
        )
    if key is None and partitions > 1:
        raise ConfigError(
            f"stream {name!r}: {partitions} partitions need a key (a field name or a "
            "callable) so that events of one key stay in order"
        )
    return record


_TIME_TYPES = (int, float, datetime)


def _check_time(name: str, record: type[Record] | None, time: object) -> None:
    """An event-time declaration: a field holding epoch seconds or a datetime, or a callable."""
    if time is None or callable(time):
        return
    if not isinstance(time, str):
        raise ConfigError(
            f"stream {name!r}: time must be a field name, a callable of the event or None "
            f"(the entry id's timestamp), got {time!r}"
        )
    if record is None:
        return
    if time not in record_fields(record):
        raise ConfigError(
            f"stream {name!r}: time field {time!r} is not a field of {record.__name__} "
            f"(fields: {', '.join(record_fields(record))})"
        )
    hint = record_field_type(record, time)
    if hint not in _TIME_TYPES:
        shown = getattr(hint, "__name__", None) or str(hint)
        raise ConfigError(
            f"stream {name!r}: time field {record.__name__}.{time} must hold epoch seconds "
            f"(float or int) or a datetime, but is declared as {shown}"
        )


def _time_getter(
    name: str, record: type[Any] | None, time: str | Callable[[Any], object]
) -> Callable[[Any], object]:
    if callable(time):
        return time
    field = time
    if record is not None:
        return operator.attrgetter(field)

    def from_dict(event: Any) -> object:
        try:
            return event[field]
        except (KeyError, TypeError):
            raise ValueError(f"stream {name!r}: event has no time field {field!r}") from None

    return from_dict


def _cached_partitioner(partitions: int) -> Callable[[object], int]:
    # Producers send many events per key: remember recent keys' partitions. typed=True keeps
    # True apart from 1 (bool keys are rejected) and 1.0 apart from 1; unhashable keys fall
    # back to computing it.
    cached = functools.lru_cache(maxsize=65536, typed=True)(
        functools.partial(partition_for, partitions=partitions)
    )

    def partition_of_key(key: object) -> int:
        try:
            return cached(key)
        except TypeError:
            if getattr(type(key), "__hash__", None) is None:
                return partition_for(key, partitions)
            raise

    return partition_of_key


class Stream(Generic[E]):
    """A declared stream of events, split into ``partitions`` Redis stream keys.

    The partition of an event is ``xxh32(normalised key) % partitions`` (see ``_core.hashing``):
    the same in every process, host and Python version.
    """

    def __init__(
        self,
        system: Owner,
        name: str,
        *,
        record: type[E] | None,
        partitions: int,
        key: str | Callable[[E], object] | None,
        codec: str,
        compression: str,
        max_payload_bytes: int,
        retention: Retention | None,
        time: EventTime = None,
    ) -> None:
        checked = _check_declaration(name, record, partitions, key)
        _check_time(name, checked, time)
        self.time = time
        self._time_of = None if time is None else _time_getter(name, record, time)
        self._time_where = f"stream {name!r}: time {time!r}"
        self.system = system
        self.name = name
        self.record = record
        self.partitions = partitions
        self.key = key
        self.retention = retention or Retention()
        try:
            self.format = RecordFormat(
                record_type=checked,
                codec=codec,
                compression=compression,
                max_payload_bytes=max_payload_bytes,
            )
        except (ValueError, TypeError, LookupError) as exc:
            raise ConfigError(f"stream {name!r}: {exc}") from None
        self.format_decoder = self.format.entry_decoder()
        self._key_of = self._make_key_getter(key)
        self._partition_of_key = _cached_partitioner(partitions)
        self._key_cache: dict[object, str] = {}  # an exact str or int key -> its stream key
        self._encode = self.format.encoder
        self._keys = [_keys.stream_key(system.name, name, p) for p in range(partitions)]
        #: exactly-once outputs on one Redis, in RESP (``_resp``): the payload encoder of the
        #: format, and per key the RESP of ``XADD <stream key> * f <format> d``
        self._payload = self.format.payload_encoder()
        self._head_cache: dict[object, bytes] = {}

    def __repr__(self) -> str:
        return f"<Stream {self.system.name}:{self.name} partitions={self.partitions}>"

    def _make_key_getter(self, key: str | Callable[[E], object] | None) -> Callable[[E], object]:
        if key is None:
            return lambda _event: None
        if callable(key):
            return key
        field = key
        if self.record is None:

            def from_dict(event: Any) -> object:
                try:
                    return event[field]
                except KeyError:
                    raise ValueError(
                        f"stream {self.name!r}: event has no key field {field!r}"
                    ) from None

            return from_dict
        return operator.attrgetter(field)

    def event_time_ms(self, event: E, entry_id: str | bytes) -> int:
        """The event's time in epoch milliseconds: its time field or function, else the
        entry id's timestamp. A value that is no time raises DecodeError (poison)."""
        if self._time_of is None:
            return entry_id_millis(entry_id)
        try:
            value = self._time_of(event)
        except Exception as exc:
            raise DecodeError(f"{self._time_where}: {exc}", kind="time") from exc
        if type(value) is float and value - value == 0.0:  # finite epoch seconds: per event
            return round(value * 1000)
        return event_time_millis(value, self._time_where)

    def time_millis(self, value: object) -> int:
        """``event_time_ms`` of an event whose time (``time_value_of``) is ``value``."""
        return event_time_millis(value, self._time_where)

    @property
    def time_value_of(self) -> Callable[[E], object] | None:
        """The raw getter of the event's time (its field, or the function), None without
        ``time=``: ``event_time_ms`` is the checked, converted form."""
        return self._time_of

    def key_of(self, event: E) -> object:
        """The event's key (the stream's ``key`` field or function), as the partitioner sees it."""
        return self._key_of(event)

    def partition_of(self, event: E) -> int:
        if self.partitions == 1:
            return 0
        return self._partition_of_key(self._key_of(event))

    def stream_key(self, partition: int) -> str:
        return self._keys[partition]

    def _command(self, event: E) -> tuple[Any, ...]:
        """The XADD of ``event`` (encoded and checked: it raises for an event the stream
        cannot carry). Runs per event sent: the partition's stream key of a str or int key
        is remembered (``_key_cache``), the format's encoder called directly."""
        if self.record is not None and not isinstance(event, self.record):
            raise TypeError(
                f"stream {self.name!r} carries {self.record.__name__} events, "
                f"got {type(event).__name__}"
            )
        fields = self._encode(event)
        if self.partitions == 1:
            return ("XADD", self._keys[0], "*", *fields)
        key = self._key_of(event)
        kind = type(key)
        if kind is str or kind is int:  # exact types: True and 1.0 are not the key 1
            cache = self._key_cache
            stream_key = cache.get(key)
            if stream_key is None:
                stream_key = self._keys[self._partition_of_key(key)]
                if len(cache) < KEY_CACHE_SIZE:
                    cache[key] = stream_key
        else:
            stream_key = self._keys[self._partition_of_key(key)]
        return ("XADD", stream_key, "*", *fields)

    def _resp(self, event: E) -> bytes:
        """``_command`` in RESP, for an output held for a commit on one Redis (a Cluster's
        outbox routes tuples). A record in JSON (most streams) is packed here, the payload
        encoded in one frame and the rest of the XADD remembered per key (``_head_cache``):
        about half the cost of ``pack(_command(event))``, the other formats' way."""
        payload = self._payload
        if payload is None:
            return pack(self._command(event))
        if not isinstance(event, self.record):  # type: ignore[arg-type]  # a record stream
            raise TypeError(
                f"stream {self.name!r} carries {self.record.__name__} events, "  # type: ignore[union-attr]
                f"got {type(event).__name__}"
            )
        raw = payload(event)
        key = self._key_of(event)
        kind = type(key)
        if kind is str or kind is int:  # exact types, as in ``_command``
            cache = self._head_cache
            head = cache.get(key)
            if head is None:
                head = self._head(key)
                if len(cache) < KEY_CACHE_SIZE:
                    cache[key] = head
        else:
            head = self._head(key)
        return b"%b$%d\r\n%b\r\n" % (head, len(raw), raw)  # pack_last(head, raw), inlined

    def _head(self, key: object) -> bytes:
        partition = 0 if self.partitions == 1 else self._partition_of_key(key)
        return pack_head(("XADD", self._keys[partition], "*", *self.format.encode_head))

    async def send(self, event: E) -> str:
        """Append one event to its partition; returns the entry id. Not retried on failure.

        In the handler of an actor with ``processing="exactly_once"`` the event is held and
        appended with the commit of the event being handled (returns "": no id yet).
        """
        scope = _SCOPE.get()
        if scope is not None and scope.holds:
            scope.outputs.append(self._resp(event) if scope.resp else self._command(event))
            return ""
        command = self._command(event)
        client = self.system.client()
        if _tracing.tracer() is None:
            reply = await client.execute(*command)
        else:
            with _tracing.send_span(self.system.name, self.name, 1) as extra:
                if self.record is not None:  # a dict stream's fields are the user's event
                    command = (*command, *extra)
                reply = await client.execute(*command)
        count_sent(self.system.name, self.name, 1)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def send_many(self, events: Iterable[E]) -> list[str]:
        """Append events in pipelines (one round trip per 1000); returns their entry ids.

        Every event is encoded and validated before anything is sent. If Redis refuses some,
        raises ``SendError`` naming exactly which were sent and which were not. Held for the
        commit in an exactly-once handler, like ``send``.
        """
        scope = _SCOPE.get()
        if scope is not None and scope.holds:
            held = [self._resp(e) if scope.resp else self._command(e) for e in events]
            scope.outputs.extend(held)
            return [""] * len(held)
        commands = [self._command(e) for e in events]
        if _tracing.tracer() is None:
            return await self._send_commands(commands)
        with _tracing.send_span(self.system.name, self.name, len(commands)) as extra:
            if extra and self.record is not None:
                commands = [(*command, *extra) for command in commands]
            return await self._send_commands(commands)

    async def _send_commands(self, commands: list[tuple[Any, ...]]) -> list[str]:
        sent: list[tuple[int, str]] = []
        try:
            return await self._pipeline(commands, sent)
        finally:
            count_sent(self.system.name, self.name, len(sent))

    async def _pipeline(
        self, commands: list[tuple[Any, ...]], sent: list[tuple[int, str]]
    ) -> list[str]:
        client = self.system.client()
        ids: list[str] = []
        failed: list[tuple[int, BaseException]] = []
        for start in range(0, len(commands), MAX_PIPELINE):
            chunk = commands[start : start + MAX_PIPELINE]
            try:
                replies = await client.pipeline(chunk)
            except (rex.ConnectionError, rex.TimeoutError) as exc:
                # The chunk may or may not have been applied; say so rather than guess.
                failed.extend((start + i, exc) for i in range(len(commands) - start))
                raise SendError(self.name, sent, failed) from exc
            for i, reply in enumerate(replies):
                if isinstance(reply, Exception):
                    failed.append((start + i, reply))
                else:
                    entry_id = reply.decode()
                    sent.append((start + i, entry_id))
                    ids.append(entry_id)
        if failed:
            raise SendError(self.name, sent, failed)
        return ids

    def producer(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate an async function whose returned event (or list of events) is sent."""

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await fn(*args, **kwargs)
            if result is None:
                return None
            if isinstance(result, list | tuple):
                await self.send_many(result)
            else:
                await self.send(result)
            return result

        return wrapper
