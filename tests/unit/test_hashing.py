"""Stable key hashing: xxh32 vectors, both implementations, key normalisation, partition range."""

from __future__ import annotations

import enum
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from actorstream._core.errors import ConfigError
from actorstream._core.hashing import key_bytes, partition_for, xxh32, xxh32_py

ROOT = Path(__file__).resolve().parents[2]

VECTORS = [
    (b"", 0x02CC5D05),
    (b"a", 0x550D7456),
    (b"abc", 0x32D153FF),
]


@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_known_xxh32_vectors(data: bytes, expected: int) -> None:
    assert xxh32_py(data) == expected
    assert xxh32(data) == expected
    assert xxhash.xxh32_intdigest(data) == expected


def test_pure_python_matches_native_at_every_length_branch() -> None:
    data = bytes(range(256)) * 2
    for n in range(0, 100):  # below, at and above 16-byte stripes; 4-byte words; tail bytes
        assert xxh32_py(data[:n]) == xxhash.xxh32_intdigest(data[:n]), n
        assert xxh32_py(data[:n], seed=2654435761) == xxhash.xxh32_intdigest(data[:n], 2654435761)


@given(st.binary(max_size=300))
def test_pure_python_matches_native(data: bytes) -> None:
    assert xxh32_py(data) == xxhash.xxh32_intdigest(data)


class Kind(enum.Enum):
    A = "a"
    B = 7


class Level(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("order-1", b"order-1"),
        ("é", b"\xc3\xa9"),
        (42, b"42"),
        (-5, b"-5"),
        (0, b"0"),
        (2**70, b"1180591620717411303424"),
        (b"\x00raw", b"\x00raw"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
        (uuid.UUID(int=1), b"00000000-0000-0000-0000-000000000001"),
        (Kind.A, b"a"),
        (Kind.B, b"7"),
        (Level.LOW, b"1"),
    ],
)
def test_key_normalisation(key: object, expected: bytes) -> None:
    assert key_bytes(key) == expected


@pytest.mark.parametrize("key", [True, False, 1.0, None, object(), (1,), ["a"]])
def test_unsupported_keys(key: object) -> None:
    with pytest.raises(TypeError, match="partition key"):
        partition_for(key, 8)


@pytest.mark.parametrize("partitions", [0, -1, True, 2.0, "4"])
def test_bad_partition_counts(partitions: object) -> None:
    with pytest.raises(ConfigError, match="partitions must be a positive int"):
        partition_for("k", partitions)  # type: ignore[arg-type]


def test_golden_partitions_never_change() -> None:
    # Changing any of these moves keys between partitions in live deployments.
    # Values computed with the xxhash package: order-1 0xC209E3E8, order-2 0x7D089A0D,
    # user:42 0xF64FDF97, "" 0x02CC5D05.
    golden = {"order-1": 8, "order-2": 13, "": 5, "user:42": 7}
    assert {k: partition_for(k, 16) for k in golden} == golden
    assert partition_for(12345, 1000) == xxhash.xxh32_intdigest(b"12345") % 1000
    assert partition_for("x", 1) == 0


@given(st.text() | st.integers() | st.binary() | st.uuids(), st.integers(1, 10_000))
def test_partition_in_range_and_deterministic(key: object, partitions: int) -> None:
    p = partition_for(key, partitions)
    assert 0 <= p < partitions
    assert partition_for(key, partitions) == p
    assert p == xxh32_py(key_bytes(key)) % partitions


@given(st.integers(), st.integers(1, 10_000))
def test_int_and_its_decimal_str_share_a_partition(key: int, partitions: int) -> None:
    assert partition_for(key, partitions) == partition_for(str(key), partitions)


@given(st.text())
def test_str_and_its_utf8_bytes_share_a_partition(key: str) -> None:
    assert partition_for(key, 97) == partition_for(key.encode(), 97)


def test_same_result_in_another_process_without_xxhash() -> None:
    keys = ["order-1", "é", "user:42", "x" * 40]
    code = (
        "import sys\nsys.modules['xxhash'] = None\n"
        "from actorstream._core import hashing as _hashing\n"
        "assert _hashing._native is None\n"
        f"print([_hashing.partition_for(k, 1024) for k in {keys!r}])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == str([partition_for(k, 1024) for k in keys])
