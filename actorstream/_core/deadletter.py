"""A dead-letter entry as data: the format written by the dead-letter move, parsed back.

A dead-letter entry holds the original entry's fields untouched, each prefixed ``o.``, plus
the metadata of ``META_FIELDS`` (``kind`` is ``max_deliveries``, ``handler`` or
``decode:<why>``; ``time`` is in unix ms).
"""

from __future__ import annotations

from attrs import frozen

from .errors import DECODE_KINDS

__all__ = ["DEAD_LETTER_KINDS", "META_FIELDS", "ORIGINAL_PREFIX", "DeadLetter", "GivenUp"]

#: Every ``kind`` of dead letter (docs/dead-letters.md): /metrics exports each at zero.
DEAD_LETTER_KINDS = (
    "max_deliveries",
    "poison_error",
    "handler",
    *(f"decode:{kind}" for kind in DECODE_KINDS),
)

ORIGINAL_PREFIX = b"o."

#: The metadata of a dead-letter entry, in entry order: (name in the entry, ``DeadLetter``
#: attribute). The one place these names are spelled: the move writes them
#: (``DeadLetter.entry_fields``), ``parse`` and ``dlq``'s JSON read them.
META_FIELDS: tuple[tuple[str, str], ...] = (
    ("stream", "stream"),
    ("partition", "partition"),
    ("id", "original_id"),
    ("actor", "actor"),
    ("kind", "kind"),
    ("error", "error"),
    ("trace", "trace"),
    ("deliveries", "deliveries"),
    ("worker", "worker"),
    ("epoch", "epoch"),
    ("time", "time_ms"),
)
_NUMBERS = frozenset({"partition", "deliveries", "epoch", "time_ms"})


@frozen
class GivenUp:
    """One entry a partition actor gives up on: what the dead-letter move writes of it."""

    entry_id: bytes
    fields: list[bytes]
    kind: str  # one of DEAD_LETTER_KINDS
    message: str
    trace: str | None
    deliveries: int


@frozen
class DeadLetter:
    """One dead-letter entry, as listed by ``actorstream dlq`` (``dlq_id`` is empty until the
    move has written it)."""

    dlq_id: str
    stream: str
    partition: int
    original_id: str
    actor: str
    kind: str
    error: str
    trace: str
    deliveries: int
    worker: str
    epoch: int
    time_ms: int
    fields: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def parse(cls, dlq_id: bytes, flat: list[bytes]) -> DeadLetter:
        meta: dict[bytes, bytes] = {}
        original: list[tuple[bytes, bytes]] = []
        for i in range(0, len(flat) - 1, 2):
            name, value = flat[i], flat[i + 1]
            if name.startswith(ORIGINAL_PREFIX):
                original.append((name[len(ORIGINAL_PREFIX) :], value))
            else:
                meta[name] = value
        values: dict[str, str | int] = {}
        for wire, attribute in META_FIELDS:
            raw = meta.get(wire.encode(), b"")
            values[attribute] = _number(raw) if attribute in _NUMBERS else raw.decode(
                "utf-8", "replace"
            )
        return cls(dlq_id=dlq_id.decode(), fields=tuple(original), **values)  # type: ignore[arg-type]

    def entry_fields(self) -> list[str | int | bytes]:
        """The field/value list of the dead-letter entry: the metadata, then the original
        entry's fields prefixed ``o.``."""
        out: list[str | int | bytes] = []
        for wire, attribute in META_FIELDS:
            out += [wire, getattr(self, attribute)]
        for original, value in self.fields:
            out += [ORIGINAL_PREFIX + original, value]
        return out

    def original_flat(self) -> list[bytes]:
        out: list[bytes] = []
        for name, value in self.fields:
            out.append(name)
            out.append(value)
        return out


def _number(raw: bytes) -> int:
    try:
        return int(raw or b"0")
    except ValueError:
        return 0
