"""The dead-letter entry format: what the move writes is what ``dlq`` reads back."""

from __future__ import annotations

import attrs

from actorstream._core.deadletter import META_FIELDS, DeadLetter
from actorstream.dlq import dead_letter_to_json


def _wire(values: list[str | int | bytes]) -> list[bytes]:
    """As Redis returns the entry: every value as bytes."""
    return [v if isinstance(v, bytes) else str(v).encode() for v in values]


def test_entry_fields_parse_back_to_the_same_dead_letter() -> None:
    written = DeadLetter(
        dlq_id="", stream="orders", partition=3, original_id="1700000000000-7", actor="bill",
        kind="decode:json", error="ValueError: bad", trace="Traceback ...", deliveries=2,
        worker="host-1-ab12cd34", epoch=9, time_ms=1700000000123,
        fields=((b"payload", b"\xff\x00"), (b"o.nested", b"x")),
    )
    flat = _wire(written.entry_fields())
    read = DeadLetter.parse(b"1700000000200-0", flat)
    assert read == attrs.evolve(written, dlq_id="1700000000200-0")
    assert read.original_flat() == [b"payload", b"\xff\x00", b"o.nested", b"x"]


def test_json_names_every_metadata_field_once() -> None:
    dl = DeadLetter.parse(b"1-0", [b"stream", b"s", b"partition", b"not a number"])
    doc = dead_letter_to_json(dl)
    assert list(doc) == ["dlq_id", *(attribute for _wire, attribute in META_FIELDS), "fields"]
    assert doc["partition"] == 0 and doc["stream"] == "s" and doc["kind"] == ""
