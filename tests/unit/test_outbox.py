"""The outbox of exactly-once on a Redis Cluster, as data (no Redis): which outputs go through
it, the forward script calls planned from an outbox read, and their outcome."""

from __future__ import annotations

import pytest
from redis import exceptions as rex

from actorstream._core import keys
from actorstream._core.commit import PendingCommit
from actorstream._core.errors import FencedError
from actorstream._core.outbox import (
    TARGET_FIELD,
    Outbox,
    after,
    marks_key,
    on_forward,
    plan_forward,
)

HOME = keys.stream_key("shop", "orders", 3)
OUTBOX = keys.outbox_key("shop", "orders", 3, "bill")
T0 = keys.stream_key("shop", "totals", 0)
T1 = keys.stream_key("shop", "totals", 1)
SAME = "as:{shop:orders:3}:s2"  # a stream in the partition's own slot


def outbox() -> Outbox:
    return Outbox(OUTBOX, lambda key: "{shop:orders:3}" in key)


def test_keys_of_the_outbox_and_marks_share_their_partition_tag() -> None:
    assert OUTBOX == "as:{shop:orders:3}:outbox:bill"
    assert marks_key(T1) == "as:{shop:totals:1}:fwd"
    with pytest.raises(ValueError, match="not a partition stream key"):
        marks_key("as:{shop:totals:1}:dlq")


def test_outputs_to_other_slots_go_through_the_outbox_in_order() -> None:
    outputs = [
        ("XADD", T0, "*", b"a", b"1"),
        ("XADD", SAME, "*", b"a", b"2"),
        ("XADD", T1, "*", b"a", b"3"),
    ]
    commands, outboxed = outbox().route(outputs)
    assert outboxed == 2
    assert commands == [
        ("XADD", OUTBOX, "*", TARGET_FIELD, T0, b"a", b"1"),
        ("XADD", SAME, "*", b"a", b"2"),
        ("XADD", OUTBOX, "*", TARGET_FIELD, T1, b"a", b"3"),
    ]


def test_a_commit_plan_routes_its_outputs_after_its_writes() -> None:
    pending = PendingCommit()
    pending.add([("as:{shop:orders:3}:t:counts", {"ann": b"2"})],
                [("XADD", T0, "*", b"a", b"1")])
    plain = pending.plan()
    assert (plain.outputs, plain.outboxed) == (1, 0)
    assert plain.commands[-1] == ("XADD", T0, "*", b"a", b"1")
    routed = pending.plan(outbox())
    assert (routed.writes, routed.outputs, routed.outboxed) == (1, 1, 1)
    assert routed.commands[0][0] == "HSET"
    assert routed.commands[1] == ("XADD", OUTBOX, "*", TARGET_FIELD, T0, b"a", b"1")


def raw(*entries: tuple[bytes, str, list[bytes]]) -> list[object]:
    return [(i, [TARGET_FIELD, t.encode(), *f]) for i, t, f in entries]


def test_one_script_call_per_target_in_outbox_order() -> None:
    read = raw(
        (b"5-0", T0, [b"a", b"1"]),
        (b"5-1", T1, [b"a", b"2", b"b", b"x"]),
        (b"6-0", T0, [b"a", b"3"]),
    )
    read.insert(1, (b"5-0x", [b"junk", b"1"]))  # not an outbox entry: trimmed, not forwarded
    plan = plan_forward(read, "orders:3:bill", 7)
    assert plan.last == b"6-0" and plan.skipped == 1
    by_target = {c.target: c for c in plan.calls}
    assert by_target[T0].keys == [T0, marks_key(T0)]
    assert by_target[T0].args == ["orders:3:bill", 7, b"5-0", 2, b"a", b"1", b"6-0", 2, b"a",
                                  b"3"]
    assert by_target[T1].args == ["orders:3:bill", 7, b"5-1", 4, b"a", b"2", b"b", b"x"]
    assert (by_target[T0].entries, by_target[T1].entries) == (2, 1)


def test_forward_outcomes_count_and_keep_failures_and_raise_fenced() -> None:
    plan = plan_forward(raw((b"1-0", T0, []), (b"1-1", T1, [])), "s", 1)
    ok = on_forward(plan, [[1, 0], [0, 1]])
    assert (ok.appended, ok.repeated, ok.failed, ok.error) == (1, 1, [], None)
    down = rex.ConnectionError("gone")
    failed = on_forward(plan, [[1, 0], down])
    assert failed.failed == [T1] and failed.error is down
    with pytest.raises(FencedError):
        on_forward(plan, [FencedError("FENCED forward mark"), [1, 0]])


def test_the_outbox_is_trimmed_below_the_id_after_the_last_forwarded() -> None:
    assert after(b"1700000000000-0") == "1700000000000-1"
    assert after("12-41") == "12-42"


def test_the_outbox_length_is_published_in_the_status_document() -> None:
    from actorstream._core.status import PartitionStatus

    status = PartitionStatus.from_json({"actor": "bill", "partition": 2, "outbox": 120})
    assert status.outbox == 120
    assert PartitionStatus.from_json({"actor": "bill", "partition": 2}).outbox is None


def test_a_wait_covers_the_commits_sent_before_it_only() -> None:
    from actorstream._core.outbox import Replication

    r = Replication()
    assert r.covers(r.sent)  # nothing committed by this session: leftovers go as they are
    first = r.send()
    second = r.send()
    assert not r.covers(first)
    r.confirm(first)  # the first commit's WAIT reached the replicas; the second's did not
    assert r.covers(first) and not r.covers(second)
    bare = r.send()  # a bare WAIT after both
    r.confirm(bare)
    assert r.covers(second)
    r.confirm(first)  # a late confirmation never moves it back
    assert r.covers(bare)
