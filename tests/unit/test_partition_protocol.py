"""The partition protocol as data (no Redis): commands planned, replies turned into results.

Replies are written the way the transport hands them over (hiredis: bytes, lists, None, and
error replies as exception instances in place).
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import exceptions as rex

from actorstream._core.deadletter import ORIGINAL_PREFIX, GivenUp
from actorstream._core.errors import FencedError
from actorstream._core.protocol import PartitionProtocol, ReadPlan

STREAM = "as:{shop:orders:3}:s"
EPOCH = "as:{shop:orders:3}:epoch:bill"


def proto(epoch: int = 7) -> PartitionProtocol:
    return PartitionProtocol(
        app="shop", stream="orders", partition=3, group="bill", consumer="w1", epoch=epoch
    )


def tail(epoch: bytes = b"7") -> list[Any]:
    """The replies of the trailing ``EXEC``-less part: WATCH OK, GET epoch."""
    return [b"OK", epoch]


def queued(plan: ReadPlan) -> list[Any]:
    """The replies before EXEC: MULTI OK, then QUEUED for each queued command."""
    return [b"OK"] + [b"QUEUED"] * (len(plan.commands) - 4)


def entry(i: int) -> list[Any]:
    return [f"{i}-0".encode(), [b"order_id", str(i).encode()]]


# -- keys and validation ---------------------------------------------------------------------


def test_keys_share_the_partition_hash_tag() -> None:
    p = proto()
    assert p.stream_key == STREAM
    assert p.epoch_key == EPOCH
    assert p.epoch_bytes == b"7"
    assert p.label == "bill[3]"


@pytest.mark.parametrize("bad", [-1, True, "7", 1.5])
def test_a_bad_epoch_is_rejected_with_its_value(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"epoch must be an integer >= 0, got"):
        proto(epoch=bad)


# -- fencing ---------------------------------------------------------------------------------


LEASE = "as:{shop:orders:3}:lease:bill"


def test_watch_confirms_our_epoch_and_lease() -> None:
    p = proto()
    assert p.watch_commands() == [("WATCH", EPOCH), ("GET", EPOCH), ("GET", LEASE)]
    assert p.on_watch([b"OK", b"7", b"w1"]) is None


@pytest.mark.parametrize(("holder", "says"), [(b"w2", "held by w2"), (None, "nobody's")])
def test_our_epoch_number_under_another_lease_is_fenced(holder: Any, says: str) -> None:
    """Redis lost data: epochs started again and another worker acquired our very number."""
    fenced = proto().on_watch([b"OK", b"7", holder])
    assert fenced is not None and not fenced.regression
    with pytest.raises(FencedError, match=rf"FENCED the lease of bill\[3\] at epoch 7 is {says}"):
        raise fenced.error()


def test_watch_fenced_by_a_newer_epoch_is_not_a_regression() -> None:
    fenced = proto().on_watch([b"OK", b"9", b"w2"])
    assert fenced is not None
    assert (fenced.ours, fenced.current, fenced.regression) == (7, 9, False)
    assert fenced.notices() == ()
    with pytest.raises(FencedError, match=r"FENCED epoch is 9, bill\[3\] has 7"):
        raise fenced.error()


@pytest.mark.parametrize("stored", [b"3", None])
def test_watch_seeing_an_older_or_missing_epoch_reports_a_regression(stored: Any) -> None:
    fenced = proto().on_watch([b"OK", stored, None])
    assert fenced is not None and fenced.regression
    (kind, message), = fenced.notices()
    assert kind == "epoch-regression"
    assert "went back from 7 to" in message and "Redis lost data" in message


def test_watch_error_reply_is_raised_before_anything_happens() -> None:
    with pytest.raises(rex.BusyLoadingError):
        proto().on_watch([rex.BusyLoadingError("LOADING"), None, None])


def test_an_aborted_exec_is_fenced_and_stops_watching() -> None:
    p = proto()
    plan = p.plan_read([b"1-0"], ">", 100)
    result = p.on_read(plan, [*queued(plan), None, *tail()])
    assert result.fenced is not None and result.fenced.current is None
    assert not result.watching
    assert result.acked == 0 and result.entries == []
    with pytest.raises(FencedError, match=r"epoch of bill\[3\] changed; 7 is stale"):
        result.raise_for_failure()


def test_an_epoch_changed_after_exec_stops_watching_so_the_next_read_rechecks() -> None:
    p = proto()
    plan = p.plan_read([], ">", 10)
    result = p.on_read(plan, [*queued(plan), [[[STREAM.encode(), [entry(1)]]], []], b"OK", b"8"])
    assert result.fenced is None and result.entries == [entry(1)]
    assert not result.watching


def test_a_failed_rewatch_also_stops_watching() -> None:
    p = proto()
    plan = p.plan_read([], ">", 10)
    replies = [*queued(plan), [None, [entry(5)]], rex.ConnectionError("x"), b"7"]
    assert not p.on_read(plan, replies).watching


# -- waiting and reading in one round trip ----------------------------------------------------


def without_tail(commands: list[Any]) -> list[Any]:
    """A read's commands without the XREVRANGE that finds the tail (a wake knows it)."""
    return [c for c in commands if c[0] != "XREVRANGE"]


def test_a_wait_read_is_a_side_effect_free_xread_block_then_the_fenced_transaction() -> None:
    p = proto()
    plan = p.plan_wait_read(b"5-0", 2000, 50)
    assert plan.blocks and plan.acks == 0 and plan.commit is None and plan.limit == 50
    assert plan.commands[0] == ("XREAD", "COUNT", 1, "BLOCK", 2000, "STREAMS", STREAM, b"5-0")
    assert plan.commands[1:] == without_tail(p.plan_read([], ">", 50).commands)
    assert not any(c[0] in ("XACK", "XREVRANGE") for c in plan.commands)


def test_a_wait_read_woken_by_an_append_returns_the_entries_the_transaction_read() -> None:
    p = proto()
    plan = p.plan_wait_read(b"5-0", 2000, 50)
    woke = [[STREAM.encode(), [entry(6)]]]
    exec_reply = [[[STREAM.encode(), [entry(6)]]]]
    result = p.on_read(plan, [woke, *queued(plan._replace(commands=plan.commands[1:])),
                              exec_reply, *tail()])
    assert result.entries == [entry(6)] and result.watching and result.fenced is None


def test_a_wait_read_timed_out_returns_the_tail_it_waited_after() -> None:
    p = proto()
    plan = p.plan_wait_read(b"5-0", 2000, 50)
    result = p.on_read(plan, [None, *queued(plan._replace(commands=plan.commands[1:])),
                              [None], *tail()])
    assert result.entries == [] and result.tail == b"5-0"
    text = p.plan_wait_read("5-0", 2000, 50)  # an id given as text
    assert p.on_read(text, [None, *queued(text._replace(commands=text.commands[1:])),
                            [None], *tail()]).tail == b"5-0"


def test_a_wait_read_woken_by_an_entry_the_group_had_delivered_waits_past_it_next() -> None:
    # The group's cursor is ahead of our tail (an operator's XGROUP SETID): the XREAD wakes
    # on an entry the XREADGROUP does not return. The next wait starts after that entry, so
    # the waits move on through the stream instead of waking on it again and again.
    p = proto()
    plan = p.plan_wait_read(b"5-0", 2000, 50)
    woke = [[STREAM.encode(), [entry(6)]]]
    result = p.on_read(plan, [woke, *queued(plan._replace(commands=plan.commands[1:])),
                              [None], *tail()])
    assert result.entries == [] and result.tail == b"6-0" and result.watching
    # an error reply to the wait (CLIENT UNBLOCK ... ERROR) leaves the tail where it was
    result = p.on_read(plan, [rex.ResponseError("UNBLOCKED"),
                              *queued(plan._replace(commands=plan.commands[1:])), [None], *tail()])
    assert result.entries == [] and result.tail == b"5-0" and result.error is None


def test_a_protocol_given_a_packer_sends_the_same_commands_packed_once() -> None:
    from actorstream._transport import pack

    packed = PartitionProtocol(
        app="shop", stream="orders", partition=3, group="bill", consumer="w1", epoch=7,
        pack=pack,
    )
    plain = proto()
    for make in (
        lambda p: p.plan_read([b"4-0"], ">", 50),
        lambda p: p.plan_read([], ">", 10),
        lambda p: p.plan_read([b"4-0"], b"3-0", 1),
        lambda p: p.plan_wait_read(b"5-0", 50, 10, [b"4-0"]),
    ):
        ours, theirs = make(packed), make(plain)
        assert [c if type(c) is bytes else pack(c) for c in ours.commands] == [
            pack(c) for c in theirs.commands
        ]
        assert ours._replace(commands=[]) == theirs._replace(commands=[])
    # the constant ones are packed once: the same object every time
    assert packed.plan_read([], ">", 10).commands[0] is packed.plan_read([], ">", 10).commands[0]
    assert packed.plan_read([], ">", 10).commands[1] is packed.plan_read([], ">", 10).commands[1]


def test_a_wait_read_whose_epoch_changed_while_blocked_is_fenced() -> None:
    p = proto()
    plan = p.plan_wait_read(b"5-0", 2000, 50)
    woke = [[STREAM.encode(), [entry(6)]]]
    result = p.on_read(plan, [woke, *queued(plan._replace(commands=plan.commands[1:])),
                              None, *tail(b"8")])
    assert result.fenced is not None and not result.watching and result.entries == []
    with pytest.raises(FencedError):
        result.raise_for_failure()


def test_acks_ride_on_a_wait_read_in_its_fenced_transaction_after_the_wake() -> None:
    p = proto()
    plan = p.plan_wait_read(b"5-0", 50, 10, [b"4-0", b"5-0"])
    assert plan.blocks and plan.acks == 2
    assert plan.commands[0][0] == "XREAD"
    assert plan.commands[1:] == without_tail(p.plan_read([b"4-0", b"5-0"], ">", 10).commands)
    woke = [[STREAM.encode(), [entry(6)]]]
    exec_reply = [2, [[STREAM.encode(), [entry(6)]]]]
    result = p.on_read(plan, [woke, *queued(plan._replace(commands=plan.commands[1:])),
                              exec_reply, *tail()])
    assert result.acked == 2 and result.entries == [entry(6)] and not result.notices


def test_acks_on_a_wait_read_fenced_while_blocked_are_not_acked() -> None:
    p = proto()
    plan = p.plan_wait_read(b"5-0", 50, 10, [b"5-0"])
    result = p.on_read(plan, [None, *queued(plan._replace(commands=plan.commands[1:])),
                              None, *tail(b"8")])
    assert result.fenced is not None and result.acked == 0


# -- ack batching ----------------------------------------------------------------------------


def test_acks_of_a_whole_batch_ride_on_the_next_read_in_one_xack() -> None:
    p = proto()
    acks = [f"{i}-0".encode() for i in range(100)]
    plan = p.plan_read(acks, ">", 50)
    assert plan.commands == [
        ("MULTI",),
        ("XACK", STREAM, "bill", *acks),
        ("XREADGROUP", "GROUP", "bill", "w1", "COUNT", 50, "STREAMS", STREAM, ">"),
        ("XREVRANGE", STREAM, "+", "-", "COUNT", 1),
        ("EXEC",),
        ("WATCH", EPOCH),
        ("GET", EPOCH),
    ]
    assert (plan.acks, plan.limit, plan.history) == (100, 50, False)
    result = p.on_read(plan, [*queued(plan), [100, [[STREAM.encode(), [entry(200)]]], []],
                              *tail()])
    assert result.acked == 100 and result.notices == ()
    assert result.entries == [entry(200)] and result.watching


def test_no_acks_no_xack_and_an_ack_only_round_trip_reads_nothing() -> None:
    p = proto()
    assert ("XACK",) not in [c[:1] for c in p.plan_read([], ">", 5).commands]
    plan = p.plan_read([b"1-0", b"2-0"], ">", 0)
    assert plan.commands == [
        ("MULTI",), ("XACK", STREAM, "bill", b"1-0", b"2-0"), ("EXEC",), ("WATCH", EPOCH),
        ("GET", EPOCH),
    ]
    result = p.on_read(plan, [b"OK", b"QUEUED", [2], *tail()])
    assert result.acked == 2 and result.entries == [] and result.tail is None


def test_acks_no_longer_pending_are_reported_not_undone() -> None:
    p = proto()
    plan = p.plan_read([b"1-0", b"2-0", b"3-0"], ">", 0)
    result = p.on_read(plan, [b"OK", b"QUEUED", [1], *tail()])
    assert result.acked == 3
    (kind, message), = result.notices
    assert kind == "acks-lost" and "2 of 3 handled entries" in message


def test_nothing_new_gives_the_stream_tail_to_block_after() -> None:
    p = proto()
    plan = p.plan_read([], ">", 10)
    result = p.on_read(plan, [*queued(plan), [None, [entry(42)]], *tail()])
    assert result.entries == [] and result.tail == b"42-0"
    empty = p.on_read(plan, [*queued(plan), [None, []], *tail()])
    assert empty.tail == b"0-0"


# -- pending replay and entries trimmed under us ---------------------------------------------


def test_replay_reads_history_after_an_id_with_delivery_counts() -> None:
    p = proto()
    plan = p.plan_read([], b"5-0", 1)
    assert plan.history
    assert plan.commands[1] == (
        "XREADGROUP", "GROUP", "bill", "w1", "COUNT", 1, "STREAMS", STREAM, b"5-0"
    )
    assert plan.commands[2] == ("XPENDING", STREAM, "bill", "(5-0", "+", 1, "w1")
    pending = [[b"6-0", b"w1", 1000, 4]]
    result = p.on_read(plan, [*queued(plan), [[[STREAM.encode(), [entry(6)]]], pending],
                              *tail()])
    assert result.entries == [entry(6)]
    assert result.deliveries == {b"6-0": 4}
    assert result.last == b"6-0" and result.trimmed == ()


def test_replay_from_the_start_accepts_a_str_id() -> None:
    plan = proto().plan_read([], "0", 1)
    assert plan.commands[2] == ("XPENDING", STREAM, "bill", "(0", "+", 1, "w1")


def test_pending_entries_trimmed_under_us_are_listed_to_ack_away_not_handled() -> None:
    p = proto()
    plan = p.plan_read([], b"0", 3)
    read = [[STREAM.encode(), [[b"1-0", None], entry(2), [b"3-0", []]]]]
    pending = [[b"1-0", b"w1", 5, 2], [b"2-0", b"w1", 5, 1], [b"3-0", b"w1", 5, 1]]
    result = p.on_read(plan, [*queued(plan), [read, pending], *tail()])
    assert result.entries == [entry(2)]
    assert result.trimmed == (b"1-0", b"3-0")
    assert result.last == b"3-0"  # the replay continues after the trimmed one


def test_replay_done_when_no_pending_entry_is_left() -> None:
    p = proto()
    plan = p.plan_read([b"9-0"], b"9-0", 1)
    result = p.on_read(plan, [*queued(plan), [1, [[STREAM.encode(), []]], []], *tail()])
    assert result.last is None and result.entries == [] and result.acked == 1


# -- OOM and other error replies -------------------------------------------------------------


def test_oom_refusing_the_read_asks_for_an_ack_only_retry() -> None:
    p = proto()
    plan = p.plan_read([b"1-0"], ">", 100)
    oom = rex.OutOfMemoryError("OOM command not allowed")
    replies = [b"OK", b"QUEUED", oom, b"QUEUED", rex.ExecAbortError("EXECABORT"), *tail()]
    result = p.on_read(plan, replies)
    assert result.ack_only_retry and result.error is oom and result.acked == 0
    assert result.watching  # the WATCH is still armed: the retry need not re-check
    with pytest.raises(rex.OutOfMemoryError):
        result.raise_for_failure()


@pytest.mark.parametrize(
    ("acks", "count"), [([], 100), ([b"1-0"], 0)], ids=["nothing-to-ack", "already-ack-only"]
)
def test_oom_without_acks_to_save_or_on_an_ack_only_trip_is_just_raised(
    acks: list[bytes], count: int
) -> None:
    p = proto()
    plan = p.plan_read(acks, ">", count)
    oom = rex.OutOfMemoryError("OOM")
    replies = [b"OK"] + [oom] * (len(plan.commands) - 4) + [rex.ExecAbortError("x"), *tail()]
    result = p.on_read(plan, replies)
    assert result.error is oom and not result.ack_only_retry


def test_an_error_inside_the_transaction_is_returned_for_the_carrier_to_raise() -> None:
    p = proto()
    plan = p.plan_read([], ">", 10)
    nogroup = rex.ResponseError("NOGROUP No such key")
    result = p.on_read(plan, [*queued(plan), [nogroup, []], *tail()])
    assert result.error is nogroup and result.fenced is None and not result.ack_only_retry


def test_exec_itself_failing_is_returned() -> None:
    p = proto()
    plan = p.plan_read([], ">", 10)
    readonly = rex.ReadOnlyError("READONLY")
    result = p.on_read(plan, [*queued(plan), readonly, *tail()])
    assert result.error is readonly


# -- claim and dead-letter move --------------------------------------------------------------


def test_claim_walks_the_cursor_and_counts_deleted_pending_entries() -> None:
    p = proto()
    call = p.plan_claim("0-0", 500)
    assert call.script == "claim"
    assert call.keys == [STREAM, EPOCH]
    assert call.args == ["bill", "w1", "7", "0-0", 500]
    more = p.on_claim([b"17-0", 500, 0])
    assert (more.cursor, more.claimed, more.trimmed, more.notices) == (b"17-0", 500, 0, ())
    done = p.on_claim([b"0-0", 3, 2])
    assert done.cursor is None and done.trimmed == 2
    (kind, message), = done.notices
    assert kind == "trimmed" and "2 pending entries were trimmed" in message


def test_dead_letter_move_is_fenced_by_our_epoch_and_keeps_the_original_fields() -> None:
    p = proto()
    call = p.plan_dead_letter(
        GivenUp(b"12-0", [b"order_id", b"12", b"amount", b"x"], "decode:schema", "e" * 3000,
                None, 3),
        worker="w1", time_ms=99,
    )
    assert call.script == "deadletter"
    assert call.keys == [STREAM, EPOCH, "as:{shop:orders:3}:dlq", "as:{shop:orders:3}:dlqidx"]
    group, epoch, entry_id, maxlen, *meta = call.args
    assert (group, epoch, entry_id, maxlen) == ("bill", "7", b"12-0", 0)
    pairs = dict(zip(meta[::2], meta[1::2], strict=True))
    assert pairs["kind"] == "decode:schema" and pairs["deliveries"] == 3
    assert pairs["epoch"] == 7 and pairs["worker"] == "w1" and pairs["time"] == 99
    assert len(pairs["error"]) == 2000 and pairs["trace"] == ""
    assert pairs[ORIGINAL_PREFIX + b"order_id"] == b"12"
    assert pairs[ORIGINAL_PREFIX + b"amount"] == b"x"
