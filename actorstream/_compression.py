"""Compression of payloads (none, zlib, lz4) and its registry; used by ``_codecs``.

Decompression never trusts the payload: it stops one byte past ``max_size`` of output (no
decompression bombs) and turns corrupt data into a ``DecodeError`` of kind ``"compression"``.
"""

from __future__ import annotations

import abc
import importlib
import zlib
from types import ModuleType
from typing import Any

from actorstream._core.errors import ConfigError, DecodeError

__all__ = ["Compression", "get_compression", "register_compression"]


def _optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_lz4_frame = _optional("lz4.frame")

#: Names we know of whose package is not installed here, with how to get them.
INSTALL_HINTS = {
    "lz4": "lz4 compression needs the lz4 package: pip install 'actorstream[fast]'",
    "msgpack": "the msgpack codec needs the msgpack package: pip install msgpack",
}


# --- compression --------------------------------------------------------------------------------


def _oversize(max_size: int) -> DecodeError:
    return DecodeError(f"payload decompresses to more than {max_size} bytes", kind="oversize")


class Compression(abc.ABC):
    """Compresses payloads; ``decompress`` must stop at ``max_size`` bytes of output."""

    name: str

    @abc.abstractmethod
    def compress(self, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Raise ``DecodeError`` of kind ``"oversize"`` past ``max_size``, ``"compression"``
        for corrupt data."""


class _NoCompression(Compression):
    name = "none"

    def compress(self, data: bytes) -> bytes:
        return data

    def decompress(self, data: bytes, max_size: int) -> bytes:
        if len(data) > max_size:
            raise _oversize(max_size)
        return data


class _ZlibCompression(Compression):
    name = "zlib"

    def __init__(self, level: int = 6) -> None:
        self._level = level

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, self._level)

    def decompress(self, data: bytes, max_size: int) -> bytes:
        stream = zlib.decompressobj()
        try:
            out = stream.decompress(data, max_size + 1)  # one byte more tells "too big" apart
        except zlib.error as exc:
            raise DecodeError(f"bad zlib payload: {exc}", kind="compression") from None
        return _whole(out, stream, max_size, "zlib")


def _whole(out: bytes, stream: Any, max_size: int, name: str) -> bytes:
    """``out``, what a streaming decompressor gave for at most ``max_size + 1`` bytes, if that is
    one complete payload within ``max_size``; else the ``DecodeError`` saying what is wrong."""
    if len(out) > max_size:
        raise _oversize(max_size)
    if not stream.eof:
        raise DecodeError(f"bad {name} payload: truncated", kind="compression")
    if stream.unused_data:
        raise DecodeError(f"bad {name} payload: trailing bytes", kind="compression")
    return out


class _Lz4Compression(Compression):
    name = "lz4"

    def __init__(self, frame: ModuleType) -> None:
        self._frame = frame

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._frame.compress(data)
        return out

    def decompress(self, data: bytes, max_size: int) -> bytes:
        stream = self._frame.LZ4FrameDecompressor()
        try:
            out: bytes = stream.decompress(data, max_length=max_size + 1)
        except (RuntimeError, ValueError) as exc:
            raise DecodeError(f"bad lz4 payload: {exc}", kind="compression") from None
        return _whole(out, stream, max_size, "lz4")


# --- registry (shared with the codecs) ---------------------------------------------------------

compressions: dict[str, Compression] = {}


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or not name.isascii() or "+" in name:
        raise ConfigError(f"{what} name must be a non-empty ASCII str without '+', got {name!r}")
    return name


def register_compression(compression: Compression, *, replace: bool = False) -> None:
    """Make ``compression`` available by name (see :func:`register_codec`)."""
    if not isinstance(compression, Compression):
        raise ConfigError(f"expected a Compression, got {compression!r}")
    name = check_name(getattr(compression, "name", None), "compression")
    if name in compressions and not replace:
        raise ConfigError(f"compression {name!r} is already registered (pass replace=True)")
    compressions[name] = compression


def unknown_name(what: str, name: object, known: dict[str, Any]) -> ConfigError:
    if name in INSTALL_HINTS:
        return ConfigError(INSTALL_HINTS[str(name)])
    return ConfigError(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")


def get_compression(name: str) -> Compression:
    """The registered compression called ``name`` (``ConfigError`` if none)."""
    try:
        return compressions[name]
    except (KeyError, TypeError):
        raise unknown_name("compression", name, compressions) from None


register_compression(_NoCompression())
register_compression(_ZlibCompression())
if _lz4_frame is not None:
    register_compression(_Lz4Compression(_lz4_frame))
