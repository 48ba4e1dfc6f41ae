"""The commit of a partition as data (no Redis): pending writes and outputs, their commands,
and how they ride in the read transaction with the acks."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rex

from actorstream._core.commit import (
    KEY_SEPARATOR,
    PendingCommit,
    field_of,
    key_of_field,
    partition_of_field,
)
from actorstream._core.errors import CommitError
from actorstream._core.hashing import partition_for
from actorstream._core.protocol import PartitionProtocol

H1 = "as:{shop:orders:3}:t:counts"
H2 = "as:{shop:orders:3}:t:totals"


def proto() -> PartitionProtocol:
    return PartitionProtocol(
        app="shop", stream="orders", partition=3, group="bill", consumer="w1", epoch=7
    )


# -- keys ------------------------------------------------------------------------------------


def test_keys_follow_the_partitioning_rules() -> None:
    assert field_of("a") == "a"
    assert field_of(42) == "42" == field_of("42")
    u = uuid.UUID(int=5)
    assert field_of(u) == str(u)
    assert field_of(("cust", 1700000000)) == f"cust{KEY_SEPARATOR}1700000000"
    assert key_of_field(field_of(("cust", 17))) == ("cust", "17")
    with pytest.raises(TypeError, match="cannot be a bool"):
        field_of(True)
    with pytest.raises(TypeError, match="must be a str, int, UUID"):
        field_of(1.5)
    with pytest.raises(TypeError, match="empty tuple"):
        field_of(())


@given(st.text(min_size=1).filter(lambda s: KEY_SEPARATOR not in s), st.integers(0, 10**12),
       st.integers(1, 64))
def test_a_key_with_parts_lives_in_the_partition_of_its_first_part(
    head: str, window: int, partitions: int
) -> None:
    field = field_of((head, window))
    assert partition_of_field(field, partitions) == partition_for(head, partitions)
    assert key_of_field(field) == (head, str(window))


# -- pending commit --------------------------------------------------------------------------

write = st.tuples(
    st.sampled_from([H1, H2]),
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.none(), st.binary(min_size=1, max_size=3)),
)


def apply(model: dict[str, dict[str, bytes]], commands: list[tuple[Any, ...]]) -> list[Any]:
    """A tiny Redis: HSET/HDEL on hashes, XADD collected in order."""
    appended = []
    for command in commands:
        name, key, *args = command
        if name == "HSET":
            for i in range(0, len(args), 2):
                model.setdefault(key, {})[args[i]] = args[i + 1]
        elif name == "HDEL":
            for field in args:
                model.get(key, {}).pop(field, None)
        elif name == "XADD":
            appended.append(command)
    return appended


@given(st.lists(st.lists(write, max_size=4), max_size=8), st.integers(0, 8))
def test_a_commit_is_the_last_write_of_each_field_and_every_output_in_order(
    events: list[list[tuple[str, str, bytes | None]]], taken_at: int
) -> None:
    """Coalescing, take and restore never change what the commands do, compared to
    applying each event's writes one by one."""
    expected: dict[str, dict[str, bytes]] = {}
    outputs = []
    pending = PendingCommit()
    taken = None
    for i, writes in enumerate(events):
        if i == taken_at:
            taken = pending.take()
        per_hash: dict[str, dict[str, bytes | None]] = {}
        for hash_key, field, value in writes:
            per_hash.setdefault(hash_key, {})[field] = value
        output = ("XADD", f"out:{i}", "*", b"f", b"json")
        pending.add(per_hash.items(), [output])
        outputs.append(output)
        for hash_key, fields in per_hash.items():
            for field, value in fields.items():
                if value is None:
                    expected.get(hash_key, {}).pop(field, None)
                else:
                    expected.setdefault(hash_key, {})[field] = value
    if taken is not None:
        pending.restore(taken)  # refused as a whole: it rides again, before the later ones
    plan = pending.plan()
    model: dict[str, dict[str, bytes]] = {}
    assert apply(model, plan.commands) == outputs
    assert {k: v for k, v in model.items() if v} == {k: v for k, v in expected.items() if v}
    assert plan.outputs == len(outputs)
    assert bool(pending) == bool(plan.commands)


def test_take_hands_over_and_starts_afresh() -> None:
    pending = PendingCommit()
    assert not pending
    pending.add([(H1, {"a": b"1"})])
    taken = pending.take()
    assert not pending and taken
    pending.add([(H1, {"a": b"2", "b": None})])
    assert pending.plan().commands == [("HSET", H1, "a", b"2"), ("HDEL", H1, "b")]
    pending.restore(taken)
    assert pending.plan().commands == [("HSET", H1, "a", b"2"), ("HDEL", H1, "b")]
    assert pending.plan().writes == 2


# -- in the read transaction -----------------------------------------------------------------


def test_the_commit_rides_before_the_acks_in_one_transaction() -> None:
    pending = PendingCommit()
    pending.add([(H1, {"a": b"3"})], [("XADD", "out", "*", b"f", b"json", b"d", b"{}")])
    plan = proto().plan_read([b"1-0", b"2-0"], ">", 10, pending.plan(), wait=(1, 500))
    names = [c[0] for c in plan.commands]
    assert names == ["MULTI", "HSET", "XADD", "XACK", "XREADGROUP", "XREVRANGE", "EXEC",
                     "WATCH", "GET", "WAIT"]
    replies = [b"OK"] + [b"QUEUED"] * 5 + [[1, b"1-0", 2, [], []], b"OK", b"7", 1]
    result = proto().on_read(plan, replies)
    assert result.error is None and result.acked == 2 and result.tail == b"0-0"
    assert result.notices == ()


def test_a_commit_acknowledged_by_fewer_replicas_is_reported_not_undone() -> None:
    pending = PendingCommit()
    pending.add([(H1, {"a": b"3"})])
    plan = proto().plan_read([b"1-0"], ">", 0, pending.plan(), wait=(2, 500))
    replies = [b"OK", b"QUEUED", b"QUEUED", [1, 1], b"OK", b"7", 1]
    result = proto().on_read(plan, replies)
    assert result.error is None and result.acked == 1
    assert result.notices[0][0] == "wait-replicas"
    assert "acknowledged by 1 of 2 replicas" in result.notices[0][1]


def test_no_wait_without_a_commit() -> None:
    plan = proto().plan_read([b"1-0"], ">", 0, PendingCommit().plan(), wait=(2, 500))
    assert [c[0] for c in plan.commands] == ["MULTI", "XACK", "EXEC", "WATCH", "GET"]


def test_a_commit_failed_in_part_is_reported_as_partial() -> None:
    pending = PendingCommit()
    pending.add([(H1, {"a": b"3"})])
    plan = proto().plan_read([b"1-0"], ">", 0, pending.plan())
    wrongtype = rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    replies = [b"OK", b"QUEUED", b"QUEUED", [wrongtype, 1], b"OK", b"7"]
    result = proto().on_read(plan, replies)
    assert result.partial and isinstance(result.error, CommitError)
    assert "failed part of a commit" in str(result.error)


def test_under_oom_acks_never_go_without_their_commit() -> None:
    pending = PendingCommit()
    pending.add([(H1, {"a": b"3"})])
    plan = proto().plan_read([b"1-0"], ">", 10, pending.plan())
    oom = rex.OutOfMemoryError("OOM command not allowed")
    replies = [b"OK", oom, b"QUEUED", b"QUEUED", b"QUEUED",
               rex.ExecAbortError("EXECABORT"), b"OK", b"7"]
    result = proto().on_read(plan, replies)
    assert result.error is oom and not result.ack_only_retry and not result.partial


def test_fenced_commit_does_nothing() -> None:
    pending = PendingCommit()
    pending.add([(H1, {"a": b"3"})])
    plan = proto().plan_read([b"1-0"], ">", 10, pending.plan())
    replies = [b"OK"] + [b"QUEUED"] * 4 + [None, b"OK", b"8"]
    result = proto().on_read(plan, replies)
    assert result.fenced is not None and not result.watching
