"""Stable key -> partition hashing.

Every producer and worker, on any host and Python version, must map a key to the same partition,
so the hash is xxh32 (seed 0) of a documented byte form of the key, never ``hash()`` (salted per
process for str and bytes). The partition is ``xxh32(key_bytes(key)) % partitions``.

Key normalisation (:func:`key_bytes`):

- ``str`` -> its UTF-8 bytes;
- ``int`` (not ``bool``) -> its decimal ASCII, so ``1`` and ``"1"`` share a partition on purpose:
  a key read back from a shell, a URL or JSON as text still lands with its events;
- ``bytes``, ``bytearray``, ``memoryview`` -> as is;
- ``uuid.UUID`` -> its canonical str (``"12345678-1234-..."``);
- ``Enum`` members -> their value, normalised by these same rules;
- anything else (``bool``, ``float``, ``None``, other objects) -> ``TypeError``: none has a byte
  form that is both obvious and stable.

The ``xxhash`` package is used when importable; otherwise a pure-Python xxh32 gives identical
results.
"""

from __future__ import annotations

import enum
import importlib
import struct
import uuid
from collections.abc import Callable

from .errors import ConfigError

__all__ = ["key_bytes", "partition_for", "xxh32"]

_MASK = 0xFFFFFFFF
_P1 = 0x9E3779B1
_P2 = 0x85EBCA77
_P3 = 0xC2B2AE3D
_P4 = 0x27D4EB2F
_P5 = 0x165667B1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _MASK, 13) * _P1) & _MASK


def xxh32_py(data: bytes, seed: int = 0) -> int:
    """Pure-Python xxh32, for when the ``xxhash`` package is not installed."""
    data = bytes(data)
    n = len(data)
    i = 0
    if n >= 16:
        v1 = (seed + _P1 + _P2) & _MASK
        v2 = (seed + _P2) & _MASK
        v3 = seed & _MASK
        v4 = (seed - _P1) & _MASK
        stripes = n // 16
        words = struct.unpack_from(f"<{stripes * 4}I", data)
        for j in range(0, stripes * 4, 4):
            v1 = _round(v1, words[j])
            v2 = _round(v2, words[j + 1])
            v3 = _round(v3, words[j + 2])
            v4 = _round(v4, words[j + 3])
        i = stripes * 16
        acc = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK
    else:
        acc = (seed + _P5) & _MASK
    acc = (acc + n) & _MASK
    while i + 4 <= n:
        (word,) = struct.unpack_from("<I", data, i)
        acc = (_rotl((acc + word * _P3) & _MASK, 17) * _P4) & _MASK
        i += 4
    while i < n:
        acc = (_rotl((acc + data[i] * _P5) & _MASK, 11) * _P1) & _MASK
        i += 1
    acc ^= acc >> 15
    acc = (acc * _P2) & _MASK
    acc ^= acc >> 13
    acc = (acc * _P3) & _MASK
    acc ^= acc >> 16
    return acc


def _native_xxh32() -> Callable[[bytes], int] | None:
    try:
        module = importlib.import_module("xxhash")
    except ImportError:
        return None
    native: Callable[[bytes], int] = module.xxh32_intdigest
    return native


_native = _native_xxh32()


def xxh32(data: bytes) -> int:
    """xxh32 with seed 0 of ``data`` (native when possible, identical either way)."""
    if _native is not None:
        return _native(data)
    return xxh32_py(data)


def key_bytes(key: object) -> bytes:
    """The byte form of a partition key (rules in the module docstring)."""
    if isinstance(key, bool):
        raise TypeError("a partition key cannot be a bool (True would collide with 1)")
    if isinstance(key, enum.Enum):
        return key_bytes(key.value)
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, int):
        return str(int(key)).encode("ascii")
    if isinstance(key, bytes):
        return key
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, uuid.UUID):
        return str(key).encode("ascii")
    raise TypeError(
        f"a partition key must be str, int, bytes, UUID or an Enum of those, "
        f"got {type(key).__name__}"
    )


def partition_for(key: object, partitions: int) -> int:
    """The partition (``0 <= p < partitions``) that ``key`` belongs to, the same everywhere."""
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise ConfigError(f"partitions must be a positive int, got {partitions!r}")
    return xxh32(key_bytes(key)) % partitions
