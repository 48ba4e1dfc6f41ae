"""Records: construction, strict conversion both ways, schema evolution, declaration errors."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Optional

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorstream._core.errors import ConfigError, DecodeError
from actorstream._records import (
    Record,
    check_record_type,
    from_primitive,
    record_decoder,
    record_encoder,
    record_fields,
    to_primitive,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Item(Record):
    sku: str
    qty: int = 1


class Order(Record):
    order_id: int
    amount: int
    note: str | None = None
    items: list[Item] = attrs.Factory(list)


class Everything(Record):
    i: int
    f: float
    s: str
    b: bool
    raw: bytes
    at: datetime
    day: date
    uid: uuid.UUID
    color: Color
    level: Level
    item: Item
    items: list[Item]
    pair: tuple[int, ...]
    scores: dict[str, float]
    maybe: Optional[int]  # noqa: UP045 - the typing spelling must work too
    other: int | None
    anything: Any


def everything() -> Everything:
    return Everything(
        i=-3,
        f=2.5,
        s="héllo",
        b=True,
        raw=b"\x00\xffbin",
        at=datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        day=date(2024, 5, 1),
        uid=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        color=Color.GREEN,
        level=Level.HIGH,
        item=Item("a", 2),
        items=[Item("b"), Item("c", 3)],
        pair=(1, 2, 3),
        scores={"x": 1.5},
        maybe=None,
        other=7,
        anything={"nested": [1, "two", None]},
    )


# --- construction -------------------------------------------------------------------------------


def test_record_is_a_frozen_attrs_class_built_positionally_or_by_keyword() -> None:
    order = Order(1, amount=5)
    assert order == Order(order_id=1, amount=5, note=None, items=[])
    assert order != Order(1, 6)
    assert repr(order) == "Order(order_id=1, amount=5, note=None, items=[])"
    assert attrs.has(Order)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        order.amount = 6  # type: ignore[misc]


def test_factory_defaults_are_not_shared() -> None:
    a, b = Order(1, 1), Order(2, 2)
    a.items.append(Item("x"))
    assert b.items == []


def test_records_of_immutable_fields_are_hashable() -> None:
    assert hash(Item("a", 1)) == hash(Item("a", 1))
    assert len({Item("a"), Item("a"), Item("b")}) == 2


def test_subclass_of_a_record_inherits_its_fields() -> None:
    class Special(Item):
        priority: int = 0

    assert record_fields(Special) == ("sku", "qty", "priority")
    assert from_primitive(Special, {"sku": "s", "priority": 2}) == Special("s", 1, 2)


def test_record_fields_in_declaration_order() -> None:
    assert record_fields(Order) == ("order_id", "amount", "note", "items")
    with pytest.raises(ConfigError):
        record_fields(int)  # type: ignore[arg-type]


# --- round trips --------------------------------------------------------------------------------


def test_every_supported_type_round_trips_through_json() -> None:
    original = everything()
    primitive = to_primitive(original)
    text = json.dumps(primitive)  # proves it is JSON-able
    assert primitive["raw"] == "AP9iaW4="
    assert primitive["at"] == "2024-05-01T12:30:00+02:00"
    assert primitive["day"] == "2024-05-01"
    assert primitive["uid"] == "12345678-1234-5678-1234-567812345678"
    assert primitive["color"] == "green"
    assert primitive["level"] == 2
    assert primitive["pair"] == [1, 2, 3]
    assert primitive["item"] == {"sku": "a", "qty": 2}
    back = from_primitive(Everything, json.loads(text))
    assert back == original
    assert back.color is Color.GREEN
    assert back.level is Level.HIGH
    assert isinstance(back.pair, tuple)
    assert isinstance(back.items[0], Item)


def test_aware_datetimes_stay_aware_and_naive_stay_naive() -> None:
    class When(Record):
        at: datetime

    aware = from_primitive(When, to_primitive(When(datetime(2024, 1, 1, 8, tzinfo=UTC))))
    assert aware.at.tzinfo is not None
    assert aware.at.utcoffset() == timedelta(0)
    naive = from_primitive(When, to_primitive(When(datetime(2024, 1, 1, 8, 0, 0, 123456))))
    assert naive.at.tzinfo is None
    assert naive.at.microsecond == 123456
    assert from_primitive(When, {"at": "2024-01-01T08:00:00Z"}).at.tzinfo is not None


def test_int_is_accepted_and_normalised_for_float_fields() -> None:
    class Price(Record):
        value: float

    price = from_primitive(Price, {"value": 3})
    assert type(price.value) is float
    assert to_primitive(Price(3)) == {"value": 3.0}


datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([None, UTC]),
)
everything_strategy = st.builds(
    Everything,
    i=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    f=st.floats(allow_nan=False, allow_infinity=False),
    s=st.text(),
    b=st.booleans(),
    raw=st.binary(),
    at=datetimes,
    day=st.dates(),
    uid=st.uuids(),
    color=st.sampled_from(Color),
    level=st.sampled_from(Level),
    item=st.builds(Item, st.text(), st.integers(-1000, 1000)),
    items=st.lists(st.builds(Item, st.text(), st.integers(-1000, 1000)), max_size=3),
    pair=st.lists(st.integers(-1000, 1000), max_size=4).map(tuple),
    scores=st.dictionaries(st.text(), st.floats(allow_nan=False, allow_infinity=False)),
    maybe=st.none() | st.integers(-1000, 1000),
    other=st.none() | st.integers(-1000, 1000),
    anything=st.recursive(
        st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
)


@given(everything_strategy)
def test_round_trip_property(record: Everything) -> None:
    assert from_primitive(Everything, json.loads(json.dumps(to_primitive(record)))) == record


# --- decoding errors ----------------------------------------------------------------------------


def decode_error(cls: type[Record], data: Any) -> str:
    with pytest.raises(DecodeError) as info:
        from_primitive(cls, data)
    assert info.value.kind == "schema"
    return str(info.value)


def test_wrong_type_deep_inside_names_the_field_path() -> None:
    data = {
        "order_id": 1,
        "amount": 2,
        "items": [{"sku": "a"}, {"sku": "b"}, {"sku": 3}],
    }
    assert decode_error(Order, data) == "Order.items[2].sku: expected str, got int"


def test_missing_required_field() -> None:
    assert decode_error(Order, {"order_id": 1}) == "Order.amount: missing required field"
    assert (
        decode_error(Order, {"order_id": 1, "amount": 1, "items": [{"qty": 1}]})
        == "Order.items[0].sku: missing required field"
    )


def test_optional_without_default_is_still_required() -> None:
    class Maybe(Record):
        value: int | None

    assert decode_error(Maybe, {}) == "Maybe.value: missing required field"
    assert from_primitive(Maybe, {"value": None}) == Maybe(None)
    assert decode_error(Maybe, {"value": "x"}) == "Maybe.value: expected int or None, got str"


@pytest.mark.parametrize(
    ("value", "got"), [(True, "bool"), ("1", "str"), (1.0, "float"), (None, "None"), ([1], "list")]
)
def test_int_fields_are_strict(value: object, got: str) -> None:
    assert decode_error(Item, {"sku": "a", "qty": value}) == f"Item.qty: expected int, got {got}"


def test_bool_and_str_for_float_are_rejected() -> None:
    class Price(Record):
        value: float

    assert decode_error(Price, {"value": True}) == "Price.value: expected float, got bool"
    assert decode_error(Price, {"value": "1.5"}) == "Price.value: expected float, got str"


def test_not_an_object() -> None:
    assert decode_error(Order, [1, 2]) == "Order: expected object, got list"
    bad_item = {"order_id": 1, "amount": 1, "items": ["sku"]}
    assert decode_error(Order, bad_item) == "Order.items[0]: expected object, got str"
    assert (
        decode_error(Order, {"order_id": 1, "amount": 1, "items": {"sku": "a"}})
        == "Order.items: expected list, got dict"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("raw", "not base64!", "Everything.raw: expected bytes as base64 str, got invalid base64"),
        ("raw", 5, "Everything.raw: expected bytes (base64 str), got int"),
        ("at", "yesterday", "Everything.at: expected ISO 8601 datetime, got 'yesterday'"),
        ("day", "2024-01-01T00:00:00", "Everything.day: expected ISO 8601 date"),
        ("uid", "nope", "Everything.uid: expected UUID, got 'nope'"),
        ("color", "blue", "Everything.color: expected a Color value, got str 'blue'"),
        ("level", True, "Everything.level: expected a Level value, got bool True"),
        ("level", "1", "Everything.level: expected a Level value"),
        ("scores", {"x": "high"}, "Everything.scores['x']: expected float, got str"),
        ("pair", [1, "2"], "Everything.pair[1]: expected int, got str"),
        ("b", 1, "Everything.b: expected bool, got int"),
        ("item", {"sku": "a", "qty": "2"}, "Everything.item.qty: expected int, got str"),
    ],
)
def test_each_type_rejects_bad_values(field: str, value: object, message: str) -> None:
    data = to_primitive(everything())
    data[field] = value
    assert decode_error(Everything, data).startswith(message)


def test_schema_evolution_unknown_fields_ignored_missing_defaults_filled() -> None:
    assert from_primitive(Order, {"order_id": 1, "amount": 2, "removed_field": [1]}) == Order(1, 2)
    assert from_primitive(Item, {"sku": "a"}).qty == 1


def test_record_validators_become_schema_errors() -> None:
    class Positive(Record):
        value: int = attrs.field(validator=attrs.validators.gt(0))

    assert from_primitive(Positive, {"value": 1}) == Positive(1)
    assert "Positive: 'value' must be > 0" in decode_error(Positive, {"value": 0})


def test_kw_only_fields_and_aliases() -> None:
    class Options(Record):
        a: int
        _secret: str = attrs.field(alias="secret", default="s")
        b: int = attrs.field(kw_only=True, default=0)

    value = Options(1, "x", b=2)
    assert to_primitive(value) == {"a": 1, "_secret": "x", "b": 2}
    assert from_primitive(Options, {"a": 1, "_secret": "x", "b": 2}) == value


# --- encoding errors ----------------------------------------------------------------------------


def test_encoding_checks_types_too_so_producers_cannot_send_poison() -> None:
    with pytest.raises(TypeError, match=r"^Order.items\[1\].qty: expected int, got str$"):
        to_primitive(Order(1, 2, items=[Item("a"), Item("b", "3")]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Order.amount: expected int, got bool$"):
        to_primitive(Order(1, True))
    with pytest.raises(TypeError, match=r"^Everything.color: expected Color, got str$"):
        to_primitive(Everything(**{**everything().__dict__, "color": "green"}))


def test_non_finite_floats_cannot_be_encoded() -> None:
    class Price(Record):
        value: float

    with pytest.raises(ValueError, match=r"^Price.value: nan cannot be encoded"):
        to_primitive(Price(float("nan")))


def test_compiled_converters_match_the_functions() -> None:
    encode, decode = record_encoder(Order), record_decoder(Order)
    order = Order(1, 2, "n", [Item("a")])
    assert encode(order) == to_primitive(order)
    assert decode(encode(order)) == order
    with pytest.raises(TypeError, match="expected a Order, got Item"):
        encode(Item("a"))  # type: ignore[arg-type]


# --- declarations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "fragment"),
    [
        (set[int], "unsupported type"),
        (int | str, "only X | None"),
        (tuple[int, str], "unsupported type"),
        (dict[int, str], "dict keys must be str"),
        (object, "unsupported type object"),
        (list[complex], "unsupported type complex"),
    ],
)
def test_unsupported_annotations_are_rejected_at_class_creation(
    annotation: object, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=r"^Bad\.field: ") as info:
        type("Bad", (Record,), {"__annotations__": {"ok": int, "field": annotation}})
    assert fragment in str(info.value)


def test_enum_with_unencodable_values_is_rejected() -> None:
    class Weird(enum.Enum):
        A = (1, 2)

    with pytest.raises(ConfigError, match=r"^Bad\.w: enum .*Weird member A"):
        type("Bad", (Record,), {"__annotations__": {"w": Weird}})


def test_bad_field_order_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Bad"):
        type("Bad", (Record,), {"__annotations__": {"a": int, "b": int}, "a": 1})


def test_forward_references_resolve_at_first_use() -> None:
    assert from_primitive(Later, {"child": {"x": 1}}) == Later(DefinedAfter(1))
    check_record_type(Later)


class Later(Record):
    child: DefinedAfter


class DefinedAfter(Record):
    x: int


def test_unresolvable_forward_reference_fails_at_check_record_type() -> None:
    class Dangling(Record):
        child: NoSuchType  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigError, match=r"Dangling.*NoSuchType"):
        check_record_type(Dangling)
    with pytest.raises(ConfigError, match="Dangling"):
        from_primitive(Dangling, {})


def test_local_record_types_referenced_as_strings() -> None:
    class Leaf(Record):
        x: int

    class Tree(Record):  # annotations are strings in this module (from __future__)
        leaf: Leaf
        children: list[Tree] = attrs.Factory(list)

    tree = Tree(Leaf(1), [Tree(Leaf(2)), Tree(Leaf(3), [Tree(Leaf(4))])])
    assert from_primitive(Tree, json.loads(json.dumps(to_primitive(tree)))) == tree
    message = decode_error(Tree, {"leaf": {"x": 1}, "children": [{"leaf": {"x": "no"}}]})
    assert message == "Tree.children[0].leaf.x: expected int, got str"


def test_check_record_type_rejects_non_records() -> None:
    for bad in (int, Record, Order(1, 1), None):
        with pytest.raises(ConfigError, match="expected a Record subclass"):
            check_record_type(bad)
