"""Dead letters for operators: list, show, count, replay and purge (public; ``actorstream dlq``).

Dead letters live in one stream per partition (``_keys.dlq_key``), next to an index (original
id -> dead-letter id) that makes the worker's move idempotent. Everything here reads those
streams directly, so it works with no worker running, and every change is one Lua script per
partition call, touching only keys of that partition's hash tag:

- ``replay`` appends each entry's original fields, untouched, to the stream key of the
  partition it came from (same key, so the same partition and the same per-key order), deletes
  the dead-letter entry and drops its index entry, atomically: a replay is never lost half-way
  and, retried, never sends an event twice (an entry already replayed is simply gone).
- ``purge`` deletes entries and their index entries, atomically.

What an operation applies to is one ``Selection`` value: by stream, partition, actor, kind
(``max_deliveries``, ``decode:json``, ... or just ``decode``), text in the error or traceback,
time range (dead-letter ids are the time of the move, so a time range is an XRANGE), or
explicit dead-letter ids::

    from actorstream.dlq import Selection, list_dead_letters, replay_dead_letters

    letters = await list_dead_letters(system, Selection(kind="decode"), limit=100)
    report = await replay_dead_letters(system, Selection(actor="bill"), dry_run=True)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from attrs import frozen

from ._core import keys as _keys
from ._core.deadletter import META_FIELDS, DeadLetter
from ._core.errors import ConfigError
from ._transport import Client, Script

if TYPE_CHECKING:
    from ._system import System

__all__ = [
    "ALL",
    "DeadLetter",
    "DeadLetterCount",
    "DeadLetterSource",
    "PurgeReport",
    "ReplayReport",
    "Selection",
    "count_dead_letters",
    "dead_letter_to_json",
    "list_dead_letters",
    "purge_dead_letters",
    "replay_dead_letters",
    "show_dead_letter",
]

_LUA = Path(__file__).parent / "_lua"
REPLAY = Script.from_file(_LUA / "dlq_replay.lua")
PURGE = Script.from_file(_LUA / "dlq_purge.lua")

#: Entries per XRANGE page and per script call.
PAGE = 500
SCRIPT_BATCH = 100
DEFAULT_LIMIT = 1000


def _partition_counts(value: Mapping[str, int]) -> dict[str, int]:
    return dict(value)


def _actor_streams(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _ids(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigError(f"ids is a list of entry ids, not one string: [{value!r}]")
    return tuple(value)


def _check_partition(_instance: object, _attribute: object, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(f"partition must be an int >= 0 (or None), got {value!r}")


def _check_ms(_instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(
            f"{attribute.name} is milliseconds since the epoch (an int), got {value!r}"
        )


def _check_text(_instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{attribute.name} must be a non-empty str (or None), got {value!r}")


def _check_ids(_instance: object, _attribute: object, value: tuple[str, ...] | None) -> None:
    for entry_id in value or ():
        _id_key(entry_id)


@frozen
class DeadLetterSource:
    """Where an app's dead letters live: its name and its streams' partition counts.

    Built from a ``System`` (``DeadLetterSource.of(system)``), or by hand when the app's code is
    not at hand: ``DeadLetterSource("shop", {"orders": 16})``.
    """

    app: str
    streams: dict[str, int] = attrs.field(converter=_partition_counts)
    actors: dict[str, str] = attrs.field(factory=dict, converter=_actor_streams)  # actor -> stream

    def __attrs_post_init__(self) -> None:
        _keys.check_name("system", self.app)
        for name, partitions in self.streams.items():
            _keys.check_name("stream", name)
            if not isinstance(partitions, int) or partitions < 1:
                raise ConfigError(f"stream {name!r}: partitions must be >= 1, got {partitions!r}")

    @classmethod
    def of(cls, system: System) -> DeadLetterSource:
        return cls(
            system.name,
            {name: s.partitions for name, s in system.streams.items()},
            {name: spec.stream.name for name, spec in system.actors.items()},
        )

    def partitions(self, stream: str | None = None, partition: int | None = None
                   ) -> list[tuple[str, int]]:
        """(stream, partition) pairs selected; unknown names are a ``ConfigError``."""
        if stream is not None and stream not in self.streams:
            known = ", ".join(sorted(self.streams)) or "none"
            raise ConfigError(
                f"unknown stream {stream!r} in app {self.app!r} (streams: {known})"
            )
        names = [stream] if stream is not None else sorted(self.streams)
        out: list[tuple[str, int]] = []
        for name in names:
            count = self.streams[name]
            if partition is not None:
                if not 0 <= partition < count:
                    raise ConfigError(
                        f"stream {name!r} has partitions 0..{count - 1}, not {partition}"
                    )
                out.append((name, partition))
            else:
                out.extend((name, p) for p in range(count))
        return out

    def check_actor(self, actor: str | None) -> None:
        if actor is not None and self.actors and actor not in self.actors:
            known = ", ".join(sorted(self.actors)) or "none"
            raise ConfigError(f"unknown actor {actor!r} in app {self.app!r} (actors: {known})")


def _source(target: System | DeadLetterSource) -> DeadLetterSource:
    if isinstance(target, DeadLetterSource):
        return target
    return DeadLetterSource.of(target)


def _client(target: System | DeadLetterSource, client: Client | None) -> Client:
    if client is not None:
        return client
    if isinstance(target, DeadLetterSource):
        raise TypeError("a DeadLetterSource needs an explicit client=")
    return target.client()


@frozen
class Selection:
    """Which dead letters an operation applies to; ``Selection()`` (``ALL``) is all of them.

    Every field narrows the selection: ``stream`` and ``partition`` pick partitions, ``actor``
    and ``kind`` (``"decode"`` matches every ``decode:*``) match the dead letter's record,
    ``error`` is a case-insensitive substring of its error or traceback, ``since_ms`` and
    ``until_ms`` bound the time of the move (inclusive), ``ids`` names dead-letter ids.
    """

    stream: str | None = attrs.field(default=None, validator=_check_text)
    partition: int | None = attrs.field(default=None, validator=_check_partition)
    actor: str | None = attrs.field(default=None, validator=_check_text)
    kind: str | None = attrs.field(default=None, validator=_check_text)
    error: str | None = attrs.field(default=None, validator=_check_text)
    since_ms: int | None = attrs.field(default=None, validator=_check_ms)
    until_ms: int | None = attrs.field(default=None, validator=_check_ms)
    ids: tuple[str, ...] | None = attrs.field(default=None, converter=_ids, validator=_check_ids)

    def __attrs_post_init__(self) -> None:
        if (
            self.since_ms is not None
            and self.until_ms is not None
            and self.since_ms > self.until_ms
        ):
            raise ConfigError(f"since ({self.since_ms}) is after until ({self.until_ms})")

    @property
    def everything(self) -> bool:
        return self == Selection(stream=self.stream, partition=self.partition)

    def matches(self, dl: DeadLetter) -> bool:
        if self.actor is not None and dl.actor != self.actor:
            return False
        if self.kind is not None and dl.kind != self.kind and not dl.kind.startswith(
            self.kind + ":"
        ):
            return False
        if self.error is not None:
            needle = self.error.lower()
            if needle not in dl.error.lower() and needle not in dl.trace.lower():
                return False
        return True

    def ranges(self) -> list[tuple[str, str]]:
        """XRANGE bounds to scan: the id list, or one time range."""
        if self.ids is not None:
            return [(i, i) for i in sorted(set(self.ids), key=_id_key)]
        start = "-" if self.since_ms is None else str(max(0, self.since_ms))
        end = "+" if self.until_ms is None else str(max(0, self.until_ms))
        return [(start, end)]


def _check_selection(selection: object) -> Selection:
    if not isinstance(selection, Selection):
        raise TypeError(
            f"selection must be an actorstream.dlq.Selection, got {type(selection).__name__}"
        )
    return selection


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ConfigError(f"{entry_id!r} is not a stream entry id (like 1700000000000-0)") from None


#: Every dead letter.
ALL = Selection()


async def _scan_partition(
    client: Client, app: str, stream: str, partition: int, sel: Selection, limit: int | None
) -> list[DeadLetter]:
    key = _keys.dlq_key(app, stream, partition)
    found: list[DeadLetter] = []
    for start, end in sel.ranges():
        cursor = start
        while True:
            page = await client.execute("XRANGE", key, cursor, end, "COUNT", PAGE)
            for raw_id, flat in page:
                dl = DeadLetter.parse(raw_id, flat)
                # Where it was read from is authoritative (replay sends it back there).
                if dl.stream != stream or dl.partition != partition:
                    dl = attrs.evolve(dl, stream=stream, partition=partition)
                if sel.matches(dl):
                    found.append(dl)
                    if limit is not None and len(found) >= limit:
                        return found
            if len(page) < PAGE:
                break
            cursor = "(" + page[-1][0].decode()
    return found


async def _select(
    client: Client, source: DeadLetterSource, sel: Selection, limit: int | None
) -> list[DeadLetter]:
    source.check_actor(sel.actor)
    per_partition = [
        await _scan_partition(client, source.app, stream, p, sel, limit)
        for stream, p in source.partitions(sel.stream, sel.partition)
    ]
    merged = list(
        heapq.merge(*per_partition, key=lambda d: (_id_key(d.dlq_id), d.stream, d.partition))
    )
    return merged if limit is None else merged[:limit]


async def list_dead_letters(
    target: System | DeadLetterSource,
    selection: Selection = ALL,
    *,
    client: Client | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[DeadLetter]:
    """Dead letters across all selected partitions, oldest move first (at most ``limit``)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 (or None), got {limit!r}")
    sel = _check_selection(selection)
    return await _select(_client(target, client), _source(target), sel, limit)


async def show_dead_letter(
    target: System | DeadLetterSource,
    ref: str,
    *,
    client: Client | None = None,
    stream: str | None = None,
) -> list[DeadLetter]:
    """The dead letters whose dead-letter id, or original entry id, is ``ref``.

    Usually one; ids are per partition, so the same id can exist in two partitions.
    """
    _id_key(ref)
    source = _source(target)
    conn = _client(target, client)
    by_dlq_id = await _select(conn, source, Selection(stream=stream, ids=(ref,)), None)
    if by_dlq_id:
        return by_dlq_id
    found: list[DeadLetter] = []
    for name, p in source.partitions(stream):
        index = _keys.dlq_index_key(source.app, name, p)
        cursor: Any = "0"
        dlq_ids: list[str] = []
        while True:
            cursor, flat = await conn.execute(
                "HSCAN", index, cursor, "MATCH", f"* {ref}", "COUNT", 1000
            )
            dlq_ids.extend(flat[i + 1].decode() for i in range(0, len(flat) - 1, 2))
            if cursor in (b"0", "0", 0):
                break
        if dlq_ids:
            sel = Selection(stream=name, partition=p, ids=tuple(dlq_ids))
            found.extend(await _scan_partition(conn, source.app, name, p, sel, None))
    return found


@frozen
class ReplayReport:
    """What a replay did: ``replayed`` (dead letter, new entry id); ``skipped`` were gone."""

    replayed: tuple[tuple[DeadLetter, str | None], ...]
    skipped: tuple[DeadLetter, ...]
    dry_run: bool


@frozen
class PurgeReport:
    purged: int
    selected: tuple[DeadLetter, ...]
    dry_run: bool


def _by_partition(letters: Sequence[DeadLetter]) -> dict[tuple[str, int], list[DeadLetter]]:
    groups: dict[tuple[str, int], list[DeadLetter]] = {}
    for dl in letters:
        groups.setdefault((dl.stream, dl.partition), []).append(dl)
    return groups


async def replay_dead_letters(
    target: System | DeadLetterSource,
    selection: Selection = ALL,
    *,
    client: Client | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Send the selected dead letters back to the partitions they came from, oldest first.

    Each event goes back as its original fields, untouched, with a new entry id: every
    consumer group of the stream sees it as a new event (at the tail, after what is there now).
    """
    source = _source(target)
    conn = _client(target, client)
    sel = _check_selection(selection)
    letters = await _select(conn, source, sel, limit)
    if dry_run:
        return ReplayReport(tuple((dl, None) for dl in letters), (), True)
    replayed: list[tuple[DeadLetter, str | None]] = []
    skipped: list[DeadLetter] = []
    for (name, p), group in _by_partition(letters).items():
        keys = [
            _keys.dlq_key(source.app, name, p),
            _keys.dlq_index_key(source.app, name, p),
            _keys.stream_key(source.app, name, p),
        ]
        for i in range(0, len(group), SCRIPT_BATCH):
            chunk = group[i : i + SCRIPT_BATCH]
            results = await conn.evalsha(REPLAY, keys, [dl.dlq_id for dl in chunk])
            for dl, result in zip(chunk, results, strict=True):
                if isinstance(result, bytes):
                    replayed.append((dl, result.decode()))
                else:
                    skipped.append(dl)
    return ReplayReport(tuple(replayed), tuple(skipped), False)


async def purge_dead_letters(
    target: System | DeadLetterSource,
    selection: Selection = ALL,
    *,
    client: Client | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """Delete the selected dead letters (and their index entries). Cannot be undone."""
    source = _source(target)
    conn = _client(target, client)
    sel = _check_selection(selection)
    letters = await _select(conn, source, sel, None)
    if dry_run:
        return PurgeReport(len(letters), tuple(letters), True)
    purged = 0
    if sel.everything:
        # Everything of these partitions: drop the keys (also index entries that MAXLEN
        # trimming of the dead-letter stream left behind).
        for name, p in source.partitions(sel.stream, sel.partition):
            keys = [_keys.dlq_key(source.app, name, p), _keys.dlq_index_key(source.app, name, p)]
            purged += int(await conn.evalsha(PURGE, keys, ["*"]))
        return PurgeReport(purged, tuple(letters), False)
    for (name, p), group in _by_partition(letters).items():
        keys = [_keys.dlq_key(source.app, name, p), _keys.dlq_index_key(source.app, name, p)]
        for i in range(0, len(group), SCRIPT_BATCH):
            chunk = group[i : i + SCRIPT_BATCH]
            purged += int(await conn.evalsha(PURGE, keys, [dl.dlq_id for dl in chunk]))
    return PurgeReport(purged, tuple(letters), False)


@frozen
class DeadLetterCount:
    stream: str
    partition: int
    kind: str
    count: int


async def count_dead_letters(
    target: System | DeadLetterSource,
    *,
    client: Client | None = None,
    stream: str | None = None,
    by_kind: bool = True,
) -> list[DeadLetterCount]:
    """Dead letters per (stream, partition, kind); ``by_kind=False``: per partition (XLEN,
    cheap; ``kind`` is then ``"*"``). Partitions without dead letters are left out."""
    source = _source(target)
    conn = _client(target, client)
    out: list[DeadLetterCount] = []
    for name, p in source.partitions(stream):
        if not by_kind:
            n = int(await conn.execute("XLEN", _keys.dlq_key(source.app, name, p)))
            if n:
                out.append(DeadLetterCount(name, p, "*", n))
            continue
        kinds: dict[str, int] = {}
        for dl in await _scan_partition(conn, source.app, name, p, Selection(), None):
            kinds[dl.kind] = kinds.get(dl.kind, 0) + 1
        out.extend(DeadLetterCount(name, p, k, n) for k, n in sorted(kinds.items()))
    return out


def dead_letter_to_json(dl: DeadLetter) -> dict[str, Any]:
    """A JSON-ready dict; original fields as text when UTF-8, else as base64."""
    import base64

    def field(name: bytes, value: bytes) -> dict[str, str]:
        item: dict[str, str] = {}
        for label, data in (("name", name), ("value", value)):
            try:
                item[label] = data.decode("utf-8")
            except UnicodeDecodeError:
                item[label + "_base64"] = base64.b64encode(data).decode("ascii")
        return item

    return {
        "dlq_id": dl.dlq_id,
        **{attribute: getattr(dl, attribute) for _name, attribute in META_FIELDS},
        "fields": [field(n, v) for n, v in dl.fields],
    }
