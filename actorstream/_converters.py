"""Converters between typed values and JSON-able primitives, one ``Spec`` per type.

The building blocks ``_records`` compiles a record's plan from: scalars (strict both ways: True
is not 1), enums, and the containers (list, tuple, dict, optional) wrapped around other specs.
A value that does not fit raises ``Invalid``, whose ``path`` grows as it propagates out.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any

import attrs

from actorstream._core.errors import ConfigError

Conv = Callable[[Any], Any]


class Invalid(Exception):
    """A value does not fit its type; ``path`` grows (innermost first) as it propagates."""

    def __init__(self, message: str, *, bad_value: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []
        self.bad_value = bad_value  # ValueError rather than TypeError when encoding

    def render(self, root: str) -> str:
        return f"{root}{''.join(reversed(self.path))}: {self.message}"


def _got(value: object) -> str:
    return "None" if value is None else type(value).__name__


def mismatch(desc: str, value: object) -> Invalid:
    return Invalid(f"expected {desc}, got {_got(value)}")


class Never:
    """No value has this exact type: a fast-path slot that never matches."""


@attrs.frozen
class Spec:
    """How one type converts: values of exact type ``fast`` pass both ways untouched."""

    fast_decode: type
    fast_encode: type
    decode: Conv
    encode: Conv
    desc: str


def identity(value: Any) -> Any:
    return value


def type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp)


def _int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise mismatch("int", v)


def _float_decode(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise mismatch("float", v)


def _float_encode(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
        if math.isfinite(f):
            return f
        raise Invalid(f"{f!r} cannot be encoded (JSON has no NaN or infinity)", bad_value=True)
    raise mismatch("float", v)


def _str(v: Any) -> str:
    if isinstance(v, str):
        return str(v)
    raise mismatch("str", v)


def _bool(v: Any) -> bool:
    raise mismatch("bool", v)  # exact bools take the fast path


def _bytes_decode(v: Any) -> bytes:
    if isinstance(v, str):
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid("expected bytes as base64 str, got invalid base64") from None
    if isinstance(v, (bytes, bytearray)):  # binary codecs such as msgpack
        return bytes(v)
    raise mismatch("bytes (base64 str)", v)


def _bytes_encode(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(v).decode("ascii")
    raise mismatch("bytes", v)


def _datetime_decode(v: Any) -> datetime:
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise Invalid(f"expected ISO 8601 datetime, got {v[:64]!r}") from None
    if isinstance(v, datetime):
        return v
    raise mismatch("datetime (ISO 8601 str)", v)


def _datetime_encode(v: Any) -> str:
    if isinstance(v, datetime):
        return v.isoformat()
    raise mismatch("datetime", v)


def _date_decode(v: Any) -> date:
    if isinstance(v, str):
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise Invalid(f"expected ISO 8601 date, got {v[:64]!r}") from None
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    raise mismatch("date (ISO 8601 str)", v)


def _date_encode(v: Any) -> str:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v.isoformat()
    raise mismatch("date", v)


def _uuid_decode(v: Any) -> uuid.UUID:
    if isinstance(v, str):
        try:
            return uuid.UUID(v)
        except ValueError:
            raise Invalid(f"expected UUID, got {v[:64]!r}") from None
    if isinstance(v, uuid.UUID):
        return v
    raise mismatch("UUID str", v)


def _uuid_encode(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    raise mismatch("UUID", v)


def enum_spec(tp: type[enum.Enum]) -> Spec:
    for member in tp:
        if type(member.value) not in (int, float, str, bool):
            raise ConfigError(
                f"enum {tp.__name__} member {member.name} has a {_got(member.value)} value; "
                "enum values must be int, float, str or bool to be encoded"
            )
    name = tp.__name__

    def decode(v: Any) -> enum.Enum:
        try:
            member = tp(v)
        except (ValueError, TypeError):
            raise Invalid(f"expected a {name} value, got {_got(v)} {v!r:.64}") from None
        if type(member.value) is not type(v):  # True must not pass for 1
            raise Invalid(f"expected a {name} value, got {_got(v)} {v!r:.64}")
        return member

    def encode(v: Any) -> Any:
        if isinstance(v, tp):
            return v.value
        raise mismatch(name, v)

    return Spec(Never, Never, decode, encode, name)


def convert_items(items: Iterable[Any], fast: type, conv: Conv) -> list[Any]:
    """Each item converted (an item already of type ``fast`` as it is); an invalid one's error
    names its index."""
    out = []
    for i, x in enumerate(items):
        if type(x) is fast:
            out.append(x)
        else:
            try:
                out.append(conv(x))
            except Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
    return out


def sequence_spec(item: Spec, kind: type, desc: str) -> Spec:
    fast_d, conv_d, fast_e, conv_e = item.fast_decode, item.decode, item.fast_encode, item.encode

    def decode(v: Any) -> Any:
        if type(v) is not list and type(v) is not tuple:
            raise mismatch(desc, v)
        out = convert_items(v, fast_d, conv_d)
        return out if kind is list else tuple(out)

    def encode(v: Any) -> list[Any]:
        if not isinstance(v, (list, tuple)):
            raise mismatch(desc, v)
        return convert_items(v, fast_e, conv_e)

    return Spec(Never, Never, decode, encode, desc)


def dict_spec(value: Spec) -> Spec:
    fast_d, conv_d = value.fast_decode, value.decode
    fast_e, conv_e = value.fast_encode, value.encode

    def convert(v: Any, fast: type, conv: Conv) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise mismatch("object", v)
        out: dict[str, Any] = {}
        for k, x in v.items():
            if type(k) is not str:
                exc = Invalid(f"expected str key, got {_got(k)} {k!r:.64}")
                raise exc
            if type(x) is fast:
                out[k] = x
            else:
                try:
                    out[k] = conv(x)
                except Invalid as exc:
                    exc.path.append(f"[{k!r}]")
                    raise
        return out

    def decode(v: Any) -> dict[str, Any]:
        return convert(v, fast_d, conv_d)

    def encode(v: Any) -> dict[str, Any]:
        return convert(v, fast_e, conv_e)

    return Spec(Never, Never, decode, encode, "object")


def optional_spec(inner: Spec) -> Spec:
    conv_d, conv_e, desc = inner.decode, inner.encode, inner.desc

    def wrap(conv: Conv) -> Conv:
        def convert(v: Any) -> Any:
            if v is None:
                return None
            try:
                return conv(v)
            except Invalid as exc:
                if not exc.path and exc.message.startswith("expected "):
                    exc.message = f"expected {desc} or None, got {_got(v)}"
                raise

        return convert

    return Spec(inner.fast_decode, inner.fast_encode, wrap(conv_d), wrap(conv_e), desc)


#: The scalar types a record field may have, and how each converts.
SCALARS: dict[Any, Spec] = {
    Any: Spec(Never, Never, identity, identity, "any"),
    int: Spec(int, int, _int, _int, "int"),
    float: Spec(float, Never, _float_decode, _float_encode, "float"),
    str: Spec(str, str, _str, _str, "str"),
    bool: Spec(bool, bool, _bool, _bool, "bool"),
    bytes: Spec(Never, Never, _bytes_decode, _bytes_encode, "bytes (base64 str)"),
    datetime: Spec(Never, Never, _datetime_decode, _datetime_encode, "datetime"),
    date: Spec(Never, Never, _date_decode, _date_encode, "date"),
    uuid.UUID: Spec(Never, Never, _uuid_decode, _uuid_encode, "UUID"),
}
