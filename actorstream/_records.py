"""Typed events: :class:`Record` subclasses and their converters to and from JSON-able primitives.

A partition actor decodes on the order of 100k events/s, so type hints are inspected once per class
(when it is created, or at first use if it names a type defined later) and compiled into closures.
Converters check types strictly on both sides: a producer cannot send an event its consumers would
reject, and a consumer turns a bad entry into a :class:`DecodeError` naming the exact field path.

Schema evolution: unknown fields in the data are ignored (a field was removed) and missing fields
that have defaults take them (an optional field was added). A missing field without a default is an
error, even if its type allows ``None``.

Caveat: ints outside the 64-bit range do not survive orjson (it refuses to write them and reads them
back as floats), so keep integer fields within 64 bits.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import math
import sys
import types
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, ClassVar, TypeVar, dataclass_transform

import attr
import attrs

from actorstream._core.errors import ConfigError, DecodeError

__all__ = [
    "Record",
    "check_record_type",
    "from_primitive",
    "record_decoder",
    "record_encoder",
    "record_fields",
    "to_primitive",
]

R = TypeVar("R", bound="Record")
_Conv = Callable[[Any], Any]

_SUPPORTED = (
    "int, float, str, bool, bytes, datetime, date, uuid.UUID, Enum, Record subclasses, list[X], "
    "tuple[X, ...], dict[str, X], X | None, Any"
)
_PLAN_ATTR = "__actorstream_plan__"
_LOCALS_ATTR = "__actorstream_locals__"


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field, attr.ib, attr.attrib))
class Record:
    """Base class of typed events: subclasses become frozen attrs classes.

    attrs runs in place (``slots=False``) from ``__init_subclass__`` so the class object users hold
    is the real one; ``dataclass_transform`` tells type checkers about the generated ``__init__``.
    """

    if typing.TYPE_CHECKING:  # so records pass where attrs wants an attrs class (fields, asdict)
        __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        try:
            attrs.define(cls, frozen=True, slots=False, auto_attribs=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"record {cls.__name__}: {exc}") from exc
        # Types local to the defining function, for string annotations that name them.
        caller = sys._getframe(1)
        if caller.f_locals is not caller.f_globals:
            local_types = {k: v for k, v in caller.f_locals.items() if isinstance(v, type)}
            type.__setattr__(cls, _LOCALS_ATTR, local_types)
        # A hint naming a type defined later defers compiling to first use / check_record_type().
        with contextlib.suppress(_Unresolved):
            _plan_for(cls)


# --- errors carried up the converter stack ------------------------------------------------------


class _Invalid(Exception):
    """A value does not fit its type; ``path`` grows (innermost first) as it propagates."""

    def __init__(self, message: str, *, bad_value: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []
        self.bad_value = bad_value  # ValueError rather than TypeError when encoding

    def render(self, root: str) -> str:
        return f"{root}{''.join(reversed(self.path))}: {self.message}"


class _Unresolved(Exception):
    """A type hint names something not defined (yet)."""


def _got(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _mismatch(desc: str, value: object) -> _Invalid:
    return _Invalid(f"expected {desc}, got {_got(value)}")


class _Never:
    """No value has this exact type: a fast-path slot that never matches."""


# --- compiled plans -----------------------------------------------------------------------------


def _not_ready(cls: type) -> _Conv:
    def fail(_value: Any) -> Any:
        raise ConfigError(f"record {cls.__name__} failed to compile; see check_record_type()")

    return fail


class _Plan:
    """The compiled converters of one record class (filled in after creation, for recursion)."""

    __slots__ = ("decode", "encode")

    def __init__(self, cls: type) -> None:
        self.encode: _Conv = _not_ready(cls)  # record -> dict, raises _Invalid
        self.decode: _Conv = _not_ready(cls)  # primitive -> record, raises _Invalid


@attrs.frozen
class _Spec:
    """How one type converts: values of exact type ``fast`` pass both ways untouched."""

    fast_decode: type
    fast_encode: type
    decode: _Conv
    encode: _Conv
    desc: str


#: Classes given a plan during the current outermost compilation, rolled back if it fails, so no
#: plan keeps a reference to a placeholder that was never filled in.
_compiling: list[type] = []
_depth = [0]


def _plan_for(cls: type) -> _Plan:
    plan = cls.__dict__.get(_PLAN_ATTR)
    if plan is not None:
        assert isinstance(plan, _Plan)
        return plan
    plan = _Plan(cls)
    type.__setattr__(cls, _PLAN_ATTR, plan)  # visible to recursive references while compiling
    _compiling.append(cls)
    _depth[0] += 1
    try:
        _compile(cls, plan)
    except BaseException:
        if _depth[0] == 1:
            for done in _compiling:
                if _PLAN_ATTR in done.__dict__:
                    type.__delattr__(done, _PLAN_ATTR)
        raise
    finally:
        _depth[0] -= 1
        if _depth[0] == 0:
            _compiling.clear()
    return plan


def _ready_plan(cls: object) -> _Plan:
    plan = cls.__dict__.get(_PLAN_ATTR) if isinstance(cls, type) else None
    if plan is None:
        check_record_type(cls)
        plan = _plan_for(cls)  # type: ignore[arg-type]
    assert isinstance(plan, _Plan)
    return plan


def _hints(cls: type) -> dict[str, Any]:
    localns: dict[str, Any] = dict(cls.__dict__.get(_LOCALS_ATTR, {}))
    localns.setdefault(cls.__name__, cls)
    try:
        return typing.get_type_hints(cls, localns=localns)
    except NameError as exc:
        raise _Unresolved(f"record {cls.__name__}: cannot resolve a type hint: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"record {cls.__name__}: bad type hint: {exc}") from exc


def _compile(cls: type, plan: _Plan) -> None:
    hints = _hints(cls)
    positional: list[str] = []
    keywords: list[str] = []
    dec_lines: list[str] = []
    enc_lines: list[str] = []
    names: list[str] = []
    namespace: dict[str, Any] = {"cls": cls, "_Invalid": _Invalid, "_mismatch": _mismatch}
    for i, a in enumerate(f for f in attrs.fields(cls) if f.init):
        try:
            spec = _spec_for(hints.get(a.name, a.type))
        except ConfigError as exc:
            raise ConfigError(f"{cls.__name__}.{a.name}: {exc}") from None
        names.append(a.name)
        namespace[f"FD{i}"] = spec.fast_decode
        namespace[f"FE{i}"] = spec.fast_encode
        namespace[f"CD{i}"] = _field_decoder(a.name, spec.decode, _default_maker(cls, a))
        namespace[f"CE{i}"] = _field_encoder(a.name, spec.encode)
        dec_lines.append(f"    v{i} = get({a.name!r}, _MISSING)")
        dec_lines.append(f"    if type(v{i}) is not FD{i}: v{i} = CD{i}(v{i})")
        enc_lines.append(f"    v{i} = values[{a.name!r}]")
        enc_lines.append(f"    if type(v{i}) is not FE{i}: v{i} = CE{i}(v{i})")
        if a.kw_only:
            keywords.append(f"{a.alias or a.name}=v{i}")
        else:
            positional.append(f"v{i}")
    namespace["_MISSING"] = _MISSING
    # Unrolled per class: this runs for every event; a generic loop measured ~35% slower.
    source = "\n".join(
        [
            "def decode(data):",
            "    if type(data) is not dict:",
            "        raise _mismatch('object', data)",
            "    get = data.get",
            *dec_lines,
            "    try:",
            f"        return cls({', '.join(positional + keywords)})",
            "    except (TypeError, ValueError) as exc:  # the record's own validators",
            "        raise _Invalid(str(exc)) from exc",
            "def encode(record):",
            "    values = record.__dict__",
            *enc_lines,
            "    return {" + ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names)) + "}",
        ]
    )
    exec(compile(source, f"<actorstream record {cls.__name__}>", "exec"), namespace)
    plan.encode = namespace["encode"]
    plan.decode = namespace["decode"]


class _MissingType:
    """The value of a field absent from the data."""


_MISSING = _MissingType()


def _default_maker(cls: type, a: attrs.Attribute[Any]) -> Callable[[], Any] | None:
    """A zero-argument callable giving the field's default, or None for a required field."""
    default: Any = a.default
    if default is attrs.NOTHING:
        return None
    if isinstance(default, attr.Factory):  # type: ignore[arg-type]  # Factory is a class
        if default.takes_self:
            raise ConfigError(
                f"{cls.__name__}.{a.name}: Factory(takes_self=True) is not supported in records"
            )
        factory: Callable[[], Any] = default.factory
        return factory
    return lambda: default


def _field_decoder(name: str, conv: _Conv, default: Callable[[], Any] | None) -> _Conv:
    def decode(v: Any) -> Any:
        if v is _MISSING:
            if default is None:
                exc = _Invalid("missing required field")
                exc.path.append("." + name)
                raise exc
            return default()
        try:
            return conv(v)
        except _Invalid as exc:
            exc.path.append("." + name)
            raise

    return decode


def _field_encoder(name: str, conv: _Conv) -> _Conv:
    def encode(v: Any) -> Any:
        try:
            return conv(v)
        except _Invalid as exc:
            exc.path.append("." + name)
            raise

    return encode


# --- per-type converters ------------------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


def _spec_for(tp: Any) -> _Spec:
    if tp is Any:
        return _Spec(_Never, _Never, _identity, _identity, "any")
    if tp is int:
        return _Spec(int, int, _int, _int, "int")
    if tp is float:
        return _Spec(float, _Never, _float_decode, _float_encode, "float")
    if tp is str:
        return _Spec(str, str, _str, _str, "str")
    if tp is bool:
        return _Spec(bool, bool, _bool, _bool, "bool")
    if tp is bytes:
        return _Spec(_Never, _Never, _bytes_decode, _bytes_encode, "bytes (base64 str)")
    if tp is datetime:
        return _Spec(_Never, _Never, _datetime_decode, _datetime_encode, "datetime")
    if tp is date:
        return _Spec(_Never, _Never, _date_decode, _date_encode, "date")
    if tp is uuid.UUID:
        return _Spec(_Never, _Never, _uuid_decode, _uuid_encode, "UUID")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_spec(tp)
    if isinstance(tp, type) and issubclass(tp, Record) and tp is not Record:
        return _record_spec(tp)
    if tp is list:
        tp = list[Any]
    elif tp is tuple:
        tp = tuple[Any, ...]
    elif tp is dict:
        tp = dict[str, Any]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and len(args) == 1:
        return _sequence_spec(_spec_for(args[0]), list, "list")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence_spec(_spec_for(args[0]), tuple, "tuple")
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            raise ConfigError(f"dict keys must be str, not {_type_name(args[0])}")
        return _dict_spec(_spec_for(args[1]))
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return _optional_spec(_spec_for(others[0]))
        raise ConfigError(
            f"unsupported union {_type_name(tp)}: only X | None is supported (an encoded value "
            "must map back to one type)"
        )
    raise ConfigError(f"unsupported type {_type_name(tp)}; supported: {_SUPPORTED}")


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp)


def _int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise _mismatch("int", v)


def _float_decode(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise _mismatch("float", v)


def _float_encode(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
        if math.isfinite(f):
            return f
        raise _Invalid(f"{f!r} cannot be encoded (JSON has no NaN or infinity)", bad_value=True)
    raise _mismatch("float", v)


def _str(v: Any) -> str:
    if isinstance(v, str):
        return str(v)
    raise _mismatch("str", v)


def _bool(v: Any) -> bool:
    raise _mismatch("bool", v)  # exact bools take the fast path


def _bytes_decode(v: Any) -> bytes:
    if isinstance(v, str):
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid("expected bytes as base64 str, got invalid base64") from None
    if isinstance(v, (bytes, bytearray)):  # binary codecs such as msgpack
        return bytes(v)
    raise _mismatch("bytes (base64 str)", v)


def _bytes_encode(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(v).decode("ascii")
    raise _mismatch("bytes", v)


def _datetime_decode(v: Any) -> datetime:
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise _Invalid(f"expected ISO 8601 datetime, got {v[:64]!r}") from None
    if isinstance(v, datetime):
        return v
    raise _mismatch("datetime (ISO 8601 str)", v)


def _datetime_encode(v: Any) -> str:
    if isinstance(v, datetime):
        return v.isoformat()
    raise _mismatch("datetime", v)


def _date_decode(v: Any) -> date:
    if isinstance(v, str):
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise _Invalid(f"expected ISO 8601 date, got {v[:64]!r}") from None
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    raise _mismatch("date (ISO 8601 str)", v)


def _date_encode(v: Any) -> str:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v.isoformat()
    raise _mismatch("date", v)


def _uuid_decode(v: Any) -> uuid.UUID:
    if isinstance(v, str):
        try:
            return uuid.UUID(v)
        except ValueError:
            raise _Invalid(f"expected UUID, got {v[:64]!r}") from None
    if isinstance(v, uuid.UUID):
        return v
    raise _mismatch("UUID str", v)


def _uuid_encode(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    raise _mismatch("UUID", v)


def _enum_spec(tp: type[enum.Enum]) -> _Spec:
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
            raise _Invalid(f"expected a {name} value, got {_got(v)} {v!r:.64}") from None
        if type(member.value) is not type(v):  # True must not pass for 1
            raise _Invalid(f"expected a {name} value, got {_got(v)} {v!r:.64}")
        return member

    def encode(v: Any) -> Any:
        if isinstance(v, tp):
            return v.value
        raise _mismatch(name, v)

    return _Spec(_Never, _Never, decode, encode, name)


def _record_spec(tp: type[Record]) -> _Spec:
    plan = _plan_for(tp)  # may still be compiling (recursive types): look its methods up late

    def decode(v: Any) -> Any:
        return plan.decode(v)

    def encode(v: Any) -> Any:
        if isinstance(v, tp):
            return plan.encode(v)
        raise _mismatch(tp.__name__, v)

    return _Spec(_Never, _Never, decode, encode, tp.__name__)


def _sequence_spec(item: _Spec, kind: type, desc: str) -> _Spec:
    fast_d, conv_d, fast_e, conv_e = item.fast_decode, item.decode, item.fast_encode, item.encode

    def decode(v: Any) -> Any:
        if type(v) is not list and type(v) is not tuple:
            raise _mismatch(desc, v)
        out = []
        for i, x in enumerate(v):
            if type(x) is fast_d:
                out.append(x)
            else:
                try:
                    out.append(conv_d(x))
                except _Invalid as exc:
                    exc.path.append(f"[{i}]")
                    raise
        return out if kind is list else tuple(out)

    def encode(v: Any) -> list[Any]:
        if not isinstance(v, (list, tuple)):
            raise _mismatch(desc, v)
        out = []
        for i, x in enumerate(v):
            if type(x) is fast_e:
                out.append(x)
            else:
                try:
                    out.append(conv_e(x))
                except _Invalid as exc:
                    exc.path.append(f"[{i}]")
                    raise
        return out

    return _Spec(_Never, _Never, decode, encode, desc)


def _dict_spec(value: _Spec) -> _Spec:
    fast_d, conv_d = value.fast_decode, value.decode
    fast_e, conv_e = value.fast_encode, value.encode

    def convert(v: Any, fast: type, conv: _Conv) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise _mismatch("object", v)
        out: dict[str, Any] = {}
        for k, x in v.items():
            if type(k) is not str:
                exc = _Invalid(f"expected str key, got {_got(k)} {k!r:.64}")
                raise exc
            if type(x) is fast:
                out[k] = x
            else:
                try:
                    out[k] = conv(x)
                except _Invalid as exc:
                    exc.path.append(f"[{k!r}]")
                    raise
        return out

    def decode(v: Any) -> dict[str, Any]:
        return convert(v, fast_d, conv_d)

    def encode(v: Any) -> dict[str, Any]:
        return convert(v, fast_e, conv_e)

    return _Spec(_Never, _Never, decode, encode, "object")


def _optional_spec(inner: _Spec) -> _Spec:
    conv_d, conv_e, desc = inner.decode, inner.encode, inner.desc

    def wrap(conv: _Conv) -> _Conv:
        def convert(v: Any) -> Any:
            if v is None:
                return None
            try:
                return conv(v)
            except _Invalid as exc:
                if not exc.path and exc.message.startswith("expected "):
                    exc.message = f"expected {desc} or None, got {_got(v)}"
                raise

        return convert

    return _Spec(inner.fast_decode, inner.fast_encode, wrap(conv_d), wrap(conv_e), desc)


# --- public API ---------------------------------------------------------------------------------


def check_record_type(cls: object) -> None:
    """Compile ``cls``'s converters now, so a bad declaration fails at stream declaration.

    Raises :class:`ConfigError` naming the class and field for unsupported or unresolvable hints.
    """
    if not (isinstance(cls, type) and issubclass(cls, Record)) or cls is Record:
        raise ConfigError(f"expected a Record subclass, got {cls!r}")
    try:
        _plan_for(cls)
    except _Unresolved as exc:
        raise ConfigError(str(exc)) from None


def record_fields(cls: type[Record]) -> tuple[str, ...]:
    """Field names in declaration order (e.g. to validate a stream's partition key)."""
    if not (isinstance(cls, type) and issubclass(cls, Record)) or cls is Record:
        raise ConfigError(f"expected a Record subclass, got {cls!r}")
    return tuple(a.name for a in attrs.fields(cls) if a.init)


def record_encoder(cls: type[R]) -> Callable[[R], dict[str, Any]]:
    """The compiled ``record -> primitive dict`` converter (what :func:`to_primitive` uses).

    It raises ``TypeError`` (or ``ValueError`` for unencodable values such as NaN) naming the field.
    """
    encode = _ready_plan(cls).encode
    root = cls.__name__

    def to_prim(record: R) -> dict[str, Any]:
        if not isinstance(record, cls):
            raise TypeError(f"expected a {root}, got {type(record).__name__}")
        try:
            result: dict[str, Any] = encode(record)
        except _Invalid as exc:
            error = ValueError if exc.bad_value else TypeError
            raise error(exc.render(root)) from None
        return result

    return to_prim


def record_plan_decoder(cls: type[R]) -> Callable[[Any], R]:
    """The bare compiled ``primitive -> record`` converter; raises ``RecordInvalid``.

    For fused hot paths that map the error themselves (``RecordInvalid.render(root)``).
    """
    decode: Callable[[Any], R] = _ready_plan(cls).decode
    return decode


RecordInvalid = _Invalid


def record_decoder(cls: type[R]) -> Callable[[Any], R]:
    """The compiled ``primitive -> record`` converter, raising ``DecodeError(kind="schema")``."""
    decode = _ready_plan(cls).decode
    root = cls.__name__

    def from_prim(data: Any) -> R:
        try:
            record: R = decode(data)
        except _Invalid as exc:
            raise DecodeError(exc.render(root), kind="schema") from None
        return record

    return from_prim


def to_primitive(record: Record) -> dict[str, Any]:
    """A JSON-able dict of ``record`` (bytes as base64, dates as ISO 8601, enums by value).

    Raises ``TypeError`` (``ValueError`` for unencodable values such as NaN) naming the field.
    """
    cls = type(record)
    try:
        result: dict[str, Any] = _ready_plan(cls).encode(record)
    except _Invalid as exc:
        error = ValueError if exc.bad_value else TypeError
        raise error(exc.render(cls.__name__)) from None
    return result


def from_primitive(cls: type[R], data: Any) -> R:
    """Build a ``cls`` from primitives, validating every field (``DecodeError(kind="schema")``)."""
    try:
        record: R = _ready_plan(cls).decode(data)
    except _Invalid as exc:
        raise DecodeError(exc.render(cls.__name__), kind="schema") from None
    return record
