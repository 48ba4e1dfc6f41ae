"""Codecs, bounded decompression, the registry and the stream entry wire format."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorstream import _codecs
from actorstream._codecs import (
    Codec,
    RecordFormat,
    get_codec,
    get_compression,
    json_codec,
    register_codec,
)
from actorstream._core.errors import ConfigError, DecodeError
from actorstream._records import Record

ROOT = Path(__file__).resolve().parents[2]


class Ev(Record):
    a: int
    b: int
    c: int


class Named(Record):
    name: str
    tags: list[str]


ORJSON = json_codec(use_orjson=True)
STDLIB = json_codec(use_orjson=False)
JSON_CODECS = [ORJSON, STDLIB]


# --- json ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_orjson_and_stdlib_read_each_other(value: Any) -> None:
    assert STDLIB.decode(ORJSON.encode(value)) == value
    assert ORJSON.decode(STDLIB.encode(value)) == value


def test_both_write_the_same_compact_utf8() -> None:
    value = {"name": "café ☕", "n": [1, 2.5, None, True]}
    expected = '{"name":"café ☕","n":[1,2.5,null,true]}'.encode()
    assert ORJSON.encode(value) == expected
    assert STDLIB.encode(value) == expected


def test_default_json_codec_prefers_orjson() -> None:
    assert get_codec("json").name == "json"
    assert repr(get_codec("json")) == "json_codec(use_orjson=True)"


@pytest.mark.parametrize("codec", JSON_CODECS, ids=repr)
@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b'"\xff"', "utf8"),
        (b"\xc3\x28", "utf8"),
        (b"{", "json"),
        (b"", "json"),
        (b"NaN", "json"),
        (b"[Infinity]", "json"),
        (b'{"a":1} x', "json"),
        (b"[" * 100_000, "json"),
    ],
)
def test_bad_json_payloads(codec: Codec, data: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.kind == kind


@pytest.mark.parametrize("codec", JSON_CODECS, ids=repr)
def test_unencodable_values_are_type_errors(codec: Codec) -> None:
    for bad in (object(), {b"k": 1}, b"raw", {1, 2}):
        with pytest.raises(TypeError, match="cannot encode as JSON"):
            codec.encode(bad)


def test_where_the_two_json_paths_differ() -> None:
    # Records refuse non-finite floats before any codec runs, but for Any-typed data orjson writes
    # NaN as null; and orjson has no ints beyond 64 bits. Pinned so a change is noticed.
    with pytest.raises(TypeError, match="cannot encode as JSON"):
        STDLIB.encode([float("nan")])
    assert ORJSON.encode([float("nan")]) == b"[null]"
    with pytest.raises(TypeError, match="cannot encode as JSON"):
        ORJSON.encode(2**64)
    assert ORJSON.decode(STDLIB.encode(2**64)) == float(2**64)


def test_msgpack_is_registered_when_installed() -> None:
    pytest.importorskip("msgpack")
    codec = get_codec("msgpack")
    value = {"a": [1, "x", None, 2.5], "b": {"c": True}}
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(DecodeError) as info:
        codec.decode(b"\xc1")  # never used in msgpack
    assert info.value.kind == "format"
    with pytest.raises(DecodeError) as info:
        codec.decode(b"\xa2\xff\xfe")  # a 2-byte str that is not UTF-8
    assert info.value.kind == "utf8"


# --- compression --------------------------------------------------------------------------------

COMPRESSIONS = ["none", "zlib", "lz4"]


@pytest.mark.parametrize("name", COMPRESSIONS)
@given(data=st.binary(max_size=2000))
def test_compression_round_trip(name: str, data: bytes) -> None:
    compression = get_compression(name)
    assert compression.decompress(compression.compress(data), 2000) == data


@pytest.mark.parametrize("name", COMPRESSIONS)
def test_decompression_is_bounded(name: str) -> None:
    compression = get_compression(name)
    bomb = compression.compress(b"\0" * 10_000_000)
    if name != "none":
        assert len(bomb) < 50_000
    with pytest.raises(DecodeError) as info:
        compression.decompress(bomb, 1_000_000)
    assert info.value.kind == "oversize"
    exact = compression.compress(b"x" * 1000)
    assert compression.decompress(exact, 1000) == b"x" * 1000
    with pytest.raises(DecodeError, match="more than 999 bytes"):
        compression.decompress(exact, 999)


@pytest.mark.parametrize("name", ["zlib", "lz4"])
def test_corrupt_compressed_data(name: str) -> None:
    compression = get_compression(name)
    good = compression.compress(os.urandom(500))
    for bad in (b"garbage!", good[: len(good) // 2], good + b"trailing", b""):
        with pytest.raises(DecodeError) as info:
            compression.decompress(bad, 10_000)
        assert info.value.kind == "compression", bad[:10]


# --- registry -----------------------------------------------------------------------------------


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown codec 'yaml'; known: json"):
        get_codec("yaml")
    with pytest.raises(ConfigError, match=r"unknown compression 'brotli'; known: .*lz4.*zlib"):
        get_compression("brotli")


class Upper(Codec):
    """A toy codec: JSON with every byte of text upper-cased (so it is visibly different)."""

    name = "upper"

    def encode(self, obj: Any) -> bytes:
        return ORJSON.encode(obj).upper()

    def decode(self, data: bytes) -> Any:
        return ORJSON.decode(data.lower())


@pytest.fixture
def upper_codec() -> Iterator[Codec]:
    codec = Upper()
    register_codec(codec)
    yield codec
    del _codecs._codecs["upper"]


def test_register_codec_and_use_it(upper_codec: Codec) -> None:
    assert get_codec("upper") is upper_codec
    fmt = RecordFormat(Named, "upper")
    fields = fmt.encode(Named("ab", ["c"]))
    assert fields == [b"f", b"upper", b"d", b'{"NAME":"AB","TAGS":["C"]}']
    assert fmt.decode(fields) == Named("ab", ["c"])
    with pytest.raises(ConfigError, match="already registered"):
        register_codec(Upper())
    register_codec(upper_codec, replace=True)


def test_register_rejects_bad_codecs() -> None:
    with pytest.raises(ConfigError, match="expected a Codec"):
        register_codec(object())  # type: ignore[arg-type]

    class Plus(Upper):
        name = "a+b"

    with pytest.raises(ConfigError, match="without '\\+'"):
        register_codec(Plus())


# --- RecordFormat: records ----------------------------------------------------------------------


def test_wire_format_is_f_then_d() -> None:
    fields = RecordFormat(Ev, "json").encode(Ev(1, 2, 3))
    assert fields == [b"f", b"json", b"d", b'{"a":1,"b":2,"c":3}']
    tag, payload = RecordFormat(Ev, "json", "zlib").encode(Ev(1, 2, 3))[1::2]
    assert tag == b"json+zlib"
    assert zlib.decompress(payload) == b'{"a":1,"b":2,"c":3}'
    assert RecordFormat(Ev, "json", "lz4").tag == b"json+lz4"


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(codec: str, compression: str) -> None:
    fmt = RecordFormat(Named, codec, compression)
    event = Named("ünïcode" * 50, ["x"] * 30)
    assert fmt.decode(fmt.encode(event)) == event


def test_a_stream_with_mixed_formats_decodes_every_entry() -> None:
    reader = RecordFormat(Named)  # writes plain json, reads whatever each entry says
    event = Named("n", ["t"])
    for codec in ("json", "msgpack"):
        for compression in COMPRESSIONS:
            assert reader.decode(RecordFormat(Named, codec, compression).encode(event)) == event


def test_fields_out_of_order_or_with_extras_still_decode() -> None:
    assert RecordFormat(Ev).decode([b"d", b'{"a":1,"b":2,"c":3}', b"f", b"json"]) == Ev(1, 2, 3)
    extra = [b"x", b"1", b"f", b"json", b"d", b'{"a":1,"b":2,"c":3}']
    assert RecordFormat(Ev).decode(extra) == Ev(1, 2, 3)


def decode_kind(fmt: RecordFormat, fields: list[bytes]) -> str:
    with pytest.raises(DecodeError) as info:
        fmt.decode(fields)
    return info.value.kind


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ([b"d", b"{}"], "format"),
        ([b"f", b"json"], "format"),
        ([b"order_id", b"1"], "format"),
        ([b"f", b"json", b"d"], "format"),
        ([b"f", b"yaml", b"d", b"{}"], "format"),
        ([b"f", b"json+brotli", b"d", b"{}"], "format"),
        ([b"f", b"\xff", b"d", b"{}"], "format"),
        ([b"f", b"json", b"d", b'{"a":1,"b":2,"c":"3"}'], "schema"),
        ([b"f", b"json", b"d", b'{"a":1,"b":2}'], "schema"),
        ([b"f", b"json", b"d", b'{"a":1,'], "json"),
        ([b"f", b"json", b"d", b"\xff\xfe"], "utf8"),
        ([b"f", b"json+zlib", b"d", b"not zlib"], "compression"),
        ([b"f", b"json", b"d", b"[" + b" " * 2000 + b"]"], "oversize"),
        ([b"f", b"json+zlib", b"d", zlib.compress(b" " * 5000)], "oversize"),
    ],
)
def test_poison_entries_raise_decode_errors_with_a_kind(fields: list[bytes], kind: str) -> None:
    assert decode_kind(RecordFormat(Ev, max_payload_bytes=1000), fields) == kind


def test_schema_errors_name_the_field() -> None:
    with pytest.raises(DecodeError, match=r"^Ev.c: expected int, got str$"):
        RecordFormat(Ev).decode([b"f", b"json", b"d", b'{"a":1,"b":2,"c":"3"}'])


def test_unknown_tags_are_not_cached_and_valid_ones_are() -> None:
    fmt = RecordFormat(Ev)
    for i in range(20):
        decode_kind(fmt, [b"f", f"bogus{i}".encode(), b"d", b"{}"])
    fmt.decode(fmt.encode(Ev(1, 2, 3)))
    assert list(fmt._decoders) == [b"json"]


def test_encode_rejects_wrong_types_and_oversize_events() -> None:
    fmt = RecordFormat(Named, max_payload_bytes=100)
    with pytest.raises(TypeError, match="a stream of Named cannot carry a Ev"):
        fmt.encode(Ev(1, 2, 3))
    with pytest.raises(TypeError, match=r"Named.tags\[0\]: expected str, got int"):
        fmt.encode(Named("x", [1]))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="over max_payload_bytes=100"):
        fmt.encode(Named("x" * 200, []))
    # the limit applies to the encoded size, before compression, as on the reading side
    with pytest.raises(ValueError, match="over max_payload_bytes=100"):
        RecordFormat(Named, compression="zlib", max_payload_bytes=100).encode(Named("x" * 200, []))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"record_type": int}, "expected a Record subclass"),
        ({"record_type": Ev, "codec": "yaml"}, "unknown codec 'yaml'"),
        ({"record_type": Ev, "compression": "brotli"}, "unknown compression 'brotli'"),
        ({"record_type": Ev, "max_payload_bytes": 0}, "max_payload_bytes must be a positive int"),
        ({"record_type": Ev, "max_payload_bytes": True}, "max_payload_bytes must be a positive"),
    ],
)
def test_bad_formats_are_rejected_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RecordFormat(**kwargs)


def test_formats_compare_by_settings() -> None:
    assert RecordFormat(Ev, "json") == RecordFormat(Ev)
    assert RecordFormat(Ev, "json", "zlib") != RecordFormat(Ev)
    assert "Ev" in repr(RecordFormat(Ev))


# --- RecordFormat: dicts ------------------------------------------------------------------------


def test_dict_events_are_stored_as_the_entrys_own_fields() -> None:
    fmt = RecordFormat(None)
    event = {"s": "é", "b": b"\x00", "m": memoryview(b"mv"), "i": -3, "f": 0.1, "big": 2**70}
    fields = fmt.encode(event)
    assert fields == [
        b"s", "é".encode(), b"b", b"\x00", b"m", b"mv", b"i", b"-3", b"f", b"0.1",
        b"big", b"1180591620717411303424",
    ]  # fmt: skip
    assert all(type(x) is bytes for x in fields)
    decoded = fmt.decode(fields)
    assert decoded == {
        "s": "é".encode(), "b": b"\x00", "m": b"mv", "i": b"-3", "f": b"0.1",
        "big": b"1180591620717411303424",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("event", "error", "message"),
    [
        ({}, ValueError, "at least one field"),
        ({"ok": True}, TypeError, "'ok': bool is ambiguous"),
        (
            {"x": None},
            TypeError,
            "'x': expected bytes, memoryview, str, int or float, got NoneType",
        ),
        ({"x": [1]}, TypeError, "got list"),
        ({"x": float("inf")}, ValueError, "not a finite float"),
        ({1: "x"}, TypeError, "keys must be str"),
        ({"x": "y" * 2000}, ValueError, "over max_payload_bytes=1000"),
        ([("k", "v")], TypeError, "needs a dict event"),
    ],
)
def test_bad_dict_events(event: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RecordFormat(None, max_payload_bytes=1000).encode(event)


def test_bad_dict_entries() -> None:
    fmt = RecordFormat(None, max_payload_bytes=1000)
    assert decode_kind(fmt, [b"k"]) == "format"
    assert decode_kind(fmt, [b"\xff", b"v"]) == "utf8"
    assert decode_kind(fmt, [b"k", b"v" * 1001]) == "oversize"


# --- optional packages missing ------------------------------------------------------------------


def run_without(modules: list[str], code: str) -> str:
    """Run ``code`` in a fresh interpreter where ``modules`` cannot be imported."""
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    result = subprocess.run(
        [sys.executable, "-c", block + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_without_orjson_json_falls_back_to_the_stdlib_and_reads_orjson_output() -> None:
    payload = ORJSON.encode({"a": 1, "b": "é"}).decode("utf-8")
    out = run_without(
        ["orjson"],
        "from actorstream._codecs import get_codec\n"
        "c = get_codec('json')\n"
        f"print(repr(c), c.decode({payload!r}.encode()) == {{'a': 1, 'b': 'é'}})",
    )
    assert out == "json_codec(use_orjson=False) True"


def test_without_lz4_asking_for_it_says_how_to_install() -> None:
    out = run_without(
        ["lz4", "lz4.frame"],
        "from actorstream._codecs import get_compression, RecordFormat\n"
        "from actorstream._records import Record\n"
        "from actorstream._core.errors import ConfigError\n"
        "class E(Record):\n"
        "    a: int\n"
        "try:\n"
        "    get_compression('lz4')\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
        "try:\n"
        "    RecordFormat(E).decode([b'f', b'json+lz4', b'd', b'x'])\n"
        "except ConfigError as e:\n"
        "    print('decode:', e)\n",
    )
    lines = out.splitlines()
    assert "pip install 'actorstream[fast]'" in lines[0]
    assert lines[1].startswith("decode: entry format 'json+lz4'")


def test_without_msgpack_it_is_simply_not_registered() -> None:
    out = run_without(
        ["msgpack"],
        "from actorstream._codecs import get_codec\n"
        "try:\n"
        "    get_codec('msgpack')\n"
        "except ValueError as e:\n"
        "    print(e)\n",
    )
    assert "pip install msgpack" in out


ENTRIES = [
    [b"f", b"json", b"d", b'{"a":1,"b":2,"c":3}'],  # the own tag: the fused fast path
    [b"f", b"json+zlib", b"d", zlib.compress(b'{"a":1,"b":2,"c":3}')],  # another format
    [b"d", b'{"a":1,"b":2,"c":3}', b"f", b"json"],  # fields out of order
    [b"f", b"json", b"d", b"{not json"],
    [b"f", b"json", b"d", b"\xff\xfe"],
    [b"f", b"json", b"d", b'{"a":"x","b":2,"c":3}'],
    [b"f", b"json", b"d", b'{"a":1}'],
    [b"f", b"json", b"d", b"[" * 100 + b"]" * 100],
    [b"f", b"json", b"d", b'{"a":1,"b":2,"c":3,"pad":"' + b"x" * 200 + b'"}'],  # oversize
    [b"f", b"nope", b"d", b"{}"],
    [b"x", b"y"],
]


@pytest.mark.parametrize("fields", ENTRIES)
def test_entry_decoder_matches_decode_exactly(fields: list[bytes]) -> None:
    """The fused per-stream decoder gives the same events and the same errors as decode()."""
    fmt = RecordFormat(Ev, "json", "none", max_payload_bytes=128)
    fast = fmt.entry_decoder()

    def outcome(fn: Any) -> Any:
        try:
            return ("ok", fn(fields))
        except DecodeError as exc:
            return ("error", exc.kind, str(exc))

    assert outcome(fast) == outcome(fmt.decode)
