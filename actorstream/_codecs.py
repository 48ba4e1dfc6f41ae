"""Codecs, compression and the stream entry wire format.

A record event is a stream entry with exactly two fields, in this order: ``f`` (the format tag,
``codec`` or ``codec+compression``, e.g. ``json+zlib``) and ``d`` (the payload). Each entry carries
its own tag, so a stream whose producers changed codec or compression over time still decodes.
A dict event (no record type) is stored as the entry's own fields, for interoperability with tools
that write plain field/value entries.

Decoding never trusts the payload: sizes are checked before and while decompressing (no
decompression bombs), and every failure becomes a :class:`DecodeError` whose ``kind`` the
dead-letter actor records. A tag naming a codec or compression this process lacks the optional
package for raises :class:`ConfigError` instead: the worker is misconfigured, the event is fine,
so it must not be dead-lettered.
"""

from __future__ import annotations

import abc
import importlib
import json
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import attrs

from actorstream._compression import (
    INSTALL_HINTS,
    Compression,
    check_name,
    compressions,
    get_compression,
    register_compression,
    unknown_name,
)
from actorstream._core.errors import ConfigError, DecodeError
from actorstream._records import Record, check_record_type, record_decoder
from actorstream._records import RecordInvalid as _RecordInvalid
from actorstream._records import record_plan_decoder as _record_plan_decoder
from actorstream._records import record_plan_encoder as _record_plan_encoder

__all__ = [
    "Codec",
    "Compression",
    "RecordFormat",
    "get_codec",
    "get_compression",
    "json_codec",
    "register_codec",
    "register_compression",
]


def _optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_orjson = _optional("orjson")
_msgpack = _optional("msgpack")


# --- codecs -------------------------------------------------------------------------------------


class Codec(abc.ABC):
    """Turns primitives (what ``to_primitive`` returns) into bytes and back.

    ``decode`` must raise :class:`DecodeError` (never another exception) for bad input: whatever
    it raises for an entry decides whether the entry is dead-lettered or the actor crashes.
    """

    name: str

    @abc.abstractmethod
    def encode(self, obj: Any) -> bytes:
        """Raise ``TypeError`` for objects the codec cannot represent."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> Any:
        """Raise :class:`DecodeError` for bytes that are not valid in this codec."""


def _json_decode_error(data: bytes, exc: Exception) -> DecodeError:
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError as utf8_exc:
        return DecodeError(f"payload is not valid UTF-8: {utf8_exc}", kind="utf8")
    return DecodeError(f"payload is not valid JSON: {exc}", kind="json")


class _OrjsonCodec(Codec):
    name = "json"

    def __init__(self) -> None:
        if _orjson is None:
            raise ConfigError("orjson is not installed: pip install 'actorstream[fast]'")
        self._dumps: Callable[[Any], bytes] = _orjson.dumps
        self._loads: Callable[[bytes], Any] = _orjson.loads
        self._error: type[Exception] = _orjson.JSONDecodeError

    def encode(self, obj: Any) -> bytes:
        try:
            return self._dumps(obj)
        except TypeError as exc:
            raise TypeError(f"cannot encode as JSON: {exc}") from None

    def decode(self, data: bytes) -> Any:
        try:
            return self._loads(data)
        except self._error as exc:
            raise _json_decode_error(data, exc) from None

    def __repr__(self) -> str:
        return "json_codec(use_orjson=True)"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _StdlibJsonCodec(Codec):
    """The fallback: output and accepted input match orjson's (compact, UTF-8, no NaN)."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant)

    def encode(self, obj: Any) -> bytes:
        try:
            return self._encoder.encode(obj).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"cannot encode as JSON: {exc}") from None

    def decode(self, data: bytes) -> Any:
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"payload is not valid UTF-8: {exc}", kind="utf8") from None
        try:
            return self._decoder.decode(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"payload is not valid JSON: {exc}", kind="json") from None

    def __repr__(self) -> str:
        return "json_codec(use_orjson=False)"


def json_codec(*, use_orjson: bool | None = None) -> Codec:
    """The ``"json"`` codec: orjson when importable (or when asked), else the stdlib."""
    if use_orjson is None:
        use_orjson = _orjson is not None
    return _OrjsonCodec() if use_orjson else _StdlibJsonCodec()


class _MsgpackCodec(Codec):
    name = "msgpack"

    def __init__(self, msgpack: ModuleType) -> None:
        self._packb: Callable[..., bytes] = msgpack.packb
        self._unpackb: Callable[..., Any] = msgpack.unpackb

    def encode(self, obj: Any) -> bytes:
        try:
            return self._packb(obj, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"cannot encode as msgpack: {exc}") from None

    def decode(self, data: bytes) -> Any:
        try:
            return self._unpackb(data, raw=False)
        except UnicodeDecodeError as exc:
            message = f"payload has a string that is not UTF-8: {exc}"
            raise DecodeError(message, kind="utf8") from None
        except (ValueError, TypeError) as exc:  # ExtraData, FormatError, StackError, bad map keys
            raise DecodeError(f"payload is not valid msgpack: {exc}", kind="format") from None


# --- registry -----------------------------------------------------------------------------------

_codecs: dict[str, Codec] = {}


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Make ``codec`` available by name, for encoding and for decoding entries tagged with it.

    Register before declaring streams: a :class:`RecordFormat` resolves names when it is built.
    """
    if not isinstance(codec, Codec):
        raise ConfigError(f"expected a Codec, got {codec!r}")
    name = check_name(getattr(codec, "name", None), "codec")
    if name in _codecs and not replace:
        raise ConfigError(f"codec {name!r} is already registered (pass replace=True)")
    _codecs[name] = codec


def get_codec(name: str) -> Codec:
    """The registered codec called ``name`` (``ConfigError`` listing the known ones if none)."""
    try:
        return _codecs[name]
    except (KeyError, TypeError):
        raise unknown_name("codec", name, _codecs) from None


register_codec(json_codec())
if _msgpack is not None:
    register_codec(_MsgpackCodec(_msgpack))


# --- the wire format ----------------------------------------------------------------------------

_F = b"f"
_D = b"d"


def _format_error(message: str) -> DecodeError:
    return DecodeError(message, kind="format")


def _positive_int(_instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive int, got {value!r}")


def _record_type_or_none(_instance: object, _attribute: object, value: type[Record] | None) -> None:
    if value is not None:
        check_record_type(value)


def _codec_name(_instance: object, _attribute: object, value: str) -> None:
    get_codec(value)


def _compression_name(_instance: object, _attribute: object, value: str) -> None:
    get_compression(value)


@attrs.frozen
class RecordFormat:
    """How one stream's events become entry fields and back.

    ``record_type=None`` means dict events stored as the entry's own fields. Everything that can
    be decided per stream or per tag is decided once; ``decode`` is a couple of dict lookups plus
    the codec and the record converter.
    """

    record_type: type[Record] | None = attrs.field(validator=_record_type_or_none)
    codec: str = attrs.field(default="json", validator=_codec_name)
    compression: str = attrs.field(default="none", validator=_compression_name)
    max_payload_bytes: int = attrs.field(default=1_048_576, validator=_positive_int)
    _tag: bytes = attrs.field(init=False, eq=False, repr=False)
    _encode: Callable[[Any], list[bytes]] = attrs.field(init=False, eq=False, repr=False)
    _decoders: dict[bytes, Callable[[bytes], Any]] = attrs.field(
        init=False, eq=False, repr=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        tag = self.codec if self.compression == "none" else f"{self.codec}+{self.compression}"
        object.__setattr__(self, "_tag", tag.encode("ascii"))
        encode = self._record_encoder() if self.record_type is not None else self._dict_encoder()
        object.__setattr__(self, "_encode", encode)

    @property
    def tag(self) -> bytes:
        """The ``f`` field this format writes (``b"json"``, ``b"json+zlib"``, ...)."""
        return self._tag

    @property
    def encode_head(self) -> tuple[bytes, bytes, bytes]:
        """The fields of a record's entry before its payload: ``(b"f", tag, b"d")``."""
        return (_F, self._tag, _D)

    @property
    def encoder(self) -> Callable[[Any], list[bytes]]:
        """``encode`` itself, one call less (for the per-event sending path)."""
        return self._encode

    def encode(self, event: Any) -> list[bytes]:
        """The flat field list of one entry (``[b"f", tag, b"d", payload]`` for records).

        Raises ``TypeError``/``ValueError`` for events the stream cannot carry.
        """
        return self._encode(event)

    def entry_decoder(self) -> Callable[[list[bytes]], Any]:
        """``decode`` specialised for entries in this format's own tag (the common case).

        Same results and errors as ``decode``; entries in any other format fall back to it.
        """
        if self.record_type is None:
            return self.decode
        own, inner, generic = self._tag, self._decoder_for(self._tag), self.decode

        def decode(fields: list[bytes]) -> Any:
            # Trailing fields (a traceparent) are not the record's: ignored, as in `decode`.
            if len(fields) >= 4 and fields[1] == own and fields[0] == _F and fields[2] == _D:
                return inner(fields[3])
            return generic(fields)

        return decode

    def decode(self, fields: list[bytes]) -> Any:
        """The event of one entry, given its flat field list as hiredis returns it."""
        if self.record_type is None:
            return self._decode_dict(fields)
        if len(fields) == 4 and fields[0] == _F and fields[2] == _D:
            tag, payload = fields[1], fields[3]
        else:
            tag, payload = self._find_tag_and_payload(fields)
        decoder = self._decoders.get(tag)
        if decoder is None:
            decoder = self._decoder_for(tag)
        return decoder(payload)

    # -- records --

    def _record_encoder(self) -> Callable[[Any], list[bytes]]:
        payload, tag = self.payload_encoder(), self._tag
        assert payload is not None

        def encode(event: Any) -> list[bytes]:
            return [_F, tag, _D, payload(event)]

        return encode

    def payload_encoder(self) -> Callable[[Any], bytes] | None:
        """A record's ``d`` payload alone (``encode`` is ``[b"f", tag, b"d", payload]``), same
        checks and errors, one frame per event for JSON by orjson; None for a dict stream."""
        if self.record_type is None:
            return None
        record_type, name = self.record_type, self.record_type.__name__
        plan_encode, codec = _record_plan_encoder(record_type), get_codec(self.codec)
        raw_json = isinstance(codec, _OrjsonCodec)  # orjson itself: its errors mapped here
        dumps = codec._dumps if isinstance(codec, _OrjsonCodec) else codec.encode
        limit, compression = self.max_payload_bytes, get_compression(self.compression)
        compress = None if compression.name == "none" else compression.compress

        def payload(event: Any) -> bytes:
            if not isinstance(event, record_type):
                raise TypeError(f"a stream of {name} cannot carry a {type(event).__name__}")
            try:
                data = plan_encode(event)
            except _RecordInvalid as exc:  # as ``record_encoder`` maps it
                raise (ValueError if exc.bad_value else TypeError)(exc.render(name)) from None
            try:
                raw = dumps(data)
            except TypeError as exc:  # as ``_OrjsonCodec.encode`` maps it (an int over 64 bits)
                if raw_json:
                    raise TypeError(f"cannot encode as JSON: {exc}") from None
                raise
            if len(raw) > limit:
                raise ValueError(
                    f"{name} event encodes to {len(raw)} bytes, over max_payload_bytes={limit}"
                )
            return raw if compress is None else compress(raw)

        return payload

    def _find_tag_and_payload(self, fields: list[bytes]) -> tuple[bytes, bytes]:
        if len(fields) % 2:
            raise _format_error(f"entry has an odd number of items ({len(fields)})")
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        tag, payload = pairs.get(_F), pairs.get(_D)
        if tag is None or payload is None:
            names = sorted(bytes(k).decode("utf-8", "replace") for k in pairs)
            raise _format_error(f"entry lacks the 'f' and 'd' fields of a record (has {names})")
        return tag, payload

    def _decoder_for(self, tag: bytes) -> Callable[[bytes], Any]:
        assert self.record_type is not None
        text = bytes(tag).decode("ascii", "replace")
        codec_name, _, compression_name = text.partition("+")
        compression_name = compression_name or "none"
        for name, known in ((codec_name, _codecs), (compression_name, compressions)):
            if name not in known:
                if name in INSTALL_HINTS:
                    raise ConfigError(f"entry format {text!r}: {INSTALL_HINTS[name]}")
                raise _format_error(
                    f"unknown entry format {text!r}; codecs: {', '.join(sorted(_codecs))}; "
                    f"compressions: {', '.join(sorted(compressions))}"
                )
        loads = _codecs[codec_name].decode
        compression = compressions[compression_name]
        from_prim = record_decoder(self.record_type)
        limit = self.max_payload_bytes

        codec = _codecs[codec_name]
        if compression.name == "none" and isinstance(codec, _OrjsonCodec):
            # The hot path of most streams, fused: one frame per event instead of three
            # (codec wrapper, converter wrapper); errors are mapped exactly as they are there.
            raw_loads, json_error = codec._loads, codec._error
            plan_decode = _record_plan_decoder(self.record_type)
            root = self.record_type.__name__

            def decode(payload: bytes) -> Any:
                if len(payload) > limit:
                    raise _too_big(len(payload), limit)
                try:
                    data = raw_loads(payload)
                except json_error as exc:
                    raise _json_decode_error(payload, exc) from None
                try:
                    return plan_decode(data)
                except _RecordInvalid as exc:
                    raise DecodeError(exc.render(root), kind="schema") from None

        elif compression.name == "none":

            def decode(payload: bytes) -> Any:
                if len(payload) > limit:
                    raise _too_big(len(payload), limit)
                return from_prim(loads(payload))

        else:
            decompress = compression.decompress

            def decode(payload: bytes) -> Any:
                if len(payload) > limit:
                    raise _too_big(len(payload), limit)
                return from_prim(loads(decompress(payload, limit)))

        self._decoders[bytes(tag)] = decode  # only valid tags are cached: the cache stays small
        return decode

    # -- dicts --

    def _dict_encoder(self) -> Callable[[Any], list[bytes]]:
        limit = self.max_payload_bytes

        def encode(event: Any) -> list[bytes]:
            if not isinstance(event, dict):
                raise TypeError(f"a dict stream needs a dict event, got {type(event).__name__}")
            if not event:
                raise ValueError("a dict event needs at least one field (Redis has no empty entry)")
            out: list[bytes] = []
            size = 0
            for key, value in event.items():
                if not isinstance(key, str):
                    raise TypeError(f"dict event keys must be str, got {key!r}")
                data = _field_bytes(key, value)
                size += len(data)
                out.append(key.encode("utf-8"))
                out.append(data)
            if size > limit:
                raise ValueError(
                    f"dict event values total {size} bytes, over max_payload_bytes={limit}"
                )
            return out

        return encode

    def _decode_dict(self, fields: list[bytes]) -> dict[str, bytes]:
        if len(fields) % 2:
            raise _format_error(f"entry has an odd number of items ({len(fields)})")
        out: dict[str, bytes] = {}
        size = 0
        it = iter(fields)
        try:
            for key in it:
                value = next(it)
                size += len(value)
                out[key.decode("utf-8")] = value
        except UnicodeDecodeError as exc:
            raise DecodeError(f"entry field name is not UTF-8: {exc}", kind="utf8") from None
        if size > self.max_payload_bytes:
            raise _too_big(size, self.max_payload_bytes)
        return out


def _too_big(size: int, limit: int) -> DecodeError:
    message = f"payload of {size} bytes is over max_payload_bytes={limit}"
    return DecodeError(message, kind="oversize")


def _field_bytes(key: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError(
            f"dict event field {key!r}: bool is ambiguous in Redis; send b'1'/b'0' or an int"
        )
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"dict event field {key!r}: {value!r} is not a finite float")
        return repr(value).encode("ascii")
    raise TypeError(
        f"dict event field {key!r}: expected bytes, memoryview, str, int or float, "
        f"got {type(value).__name__}"
    )
