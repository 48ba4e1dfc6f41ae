"""A dead-letter entry as data: the format written by the dead-letter move, parsed back.

A dead-letter entry holds the original entry's fields untouched, each prefixed ``o.``, plus:
``stream``, ``partition``, ``id``, ``actor``, ``kind`` (``max_deliveries``, ``handler`` or
``decode:<why>``), ``error``, ``trace``, ``deliveries``, ``worker``, ``epoch``, ``time`` (unix ms).
"""

from __future__ import annotations

from attrs import frozen

__all__ = ["ORIGINAL_PREFIX", "DeadLetter"]

ORIGINAL_PREFIX = b"o."


@frozen
class DeadLetter:
    """One dead-letter entry, as listed by ``actorstream dlq``."""

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

        def text(name: str) -> str:
            return meta.get(name.encode(), b"").decode("utf-8", "replace")

        def number(name: str) -> int:
            try:
                return int(meta.get(name.encode(), b"0"))
            except ValueError:
                return 0

        return cls(
            dlq_id=dlq_id.decode(),
            stream=text("stream"),
            partition=number("partition"),
            original_id=text("id"),
            actor=text("actor"),
            kind=text("kind"),
            error=text("error"),
            trace=text("trace"),
            deliveries=number("deliveries"),
            worker=text("worker"),
            epoch=number("epoch"),
            time_ms=number("time"),
            fields=tuple(original),
        )

    def original_flat(self) -> list[bytes]:
        out: list[bytes] = []
        for name, value in self.fields:
            out.append(name)
            out.append(value)
        return out
