"""Stream partitioning as producers see it (no Redis): the cached path equals partition_for."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorstream import Record, Stream, System
from actorstream._core.hashing import partition_for


class Order(Record):
    order_id: int
    amount: int


def streams() -> tuple[Stream[Order], Stream[dict[str, Any]]]:
    system = System("unit", "redis://127.0.0.1:1/0")
    records = system.stream("orders", record=Order, partitions=16, key="order_id")
    dicts = system.stream("raw", partitions=7, key="k")
    return records, dicts


@given(st.one_of(st.integers(), st.text(), st.binary(), st.uuids()))
def test_cached_partition_equals_partition_for(key: object) -> None:
    _, dicts = streams()
    first = dicts.partition_of({"k": key})
    again = dicts.partition_of({"k": key})
    assert first == again == partition_for(key, 7)


def test_int_and_str_keys_share_a_partition_but_bool_and_float_are_rejected() -> None:
    records, dicts = streams()
    assert records.partition_of(Order(order_id=42, amount=1)) == partition_for("42", 16)
    assert dicts.partition_of({"k": 1}) == dicts.partition_of({"k": "1"})
    dicts.partition_of({"k": 1})  # cached as an int ...
    with pytest.raises(TypeError):
        dicts.partition_of({"k": True})  # ... True is not 1 here
    with pytest.raises(TypeError):
        dicts.partition_of({"k": 1.0})
    with pytest.raises(TypeError):
        dicts.partition_of({"k": [1]})  # unhashable, unsupported
    assert dicts.partition_of({"k": bytearray(b"ab")}) == partition_for(b"ab", 7)
    u = uuid.uuid4()
    assert dicts.partition_of({"k": u}) == partition_for(str(u), 7)
