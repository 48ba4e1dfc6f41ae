"""top's model without Redis: the status document schema, the query plan, snapshots and rates."""

from __future__ import annotations

import json

import attrs
import pytest

from actorstream._core.status import (
    CoordinatorStatus,
    LayoutEntry,
    PartitionStatus,
    StatusDocument,
    StatusFormatError,
    WorkerEvent,
)
from actorstream._top.model import (
    PartitionRead,
    Reading,
    SlotRead,
    StreamLayout,
    build_snapshot,
)
from actorstream._top.poll import parse, plan

W = "vm-7-0123abcd"
LAYOUT = (StreamLayout("orders", 2, ("bill",)),)


def doc(processed: int, states: tuple[str, str] = ("running", "running"),
        owned: int | None = 2) -> StatusDocument:
    return StatusDocument(
        worker_id=W, host="vm", pid=7, published_at=100.0,
        partitions=tuple(
            PartitionStatus("bill", p, "orders", state=states[p], processed=processed)
            for p in range(2)
        ),
        coordinator=CoordinatorStatus(owned=owned, rebalances=1),
        layout=(LayoutEntry("bill", "orders", 2),),
    )


def reading(now: float, d: StatusDocument) -> Reading:
    return Reading(
        now=now, streams=LAYOUT, members=(W,), docs={W: d},
        partitions={("orders", p): PartitionRead(length=50, added=50 + int(now)) for p in (0, 1)},
        slots={("bill", "orders", p): SlotRead(owner=W, epoch=3) for p in (0, 1)},
    )


def test_status_document_round_trips_and_reads_tolerantly() -> None:
    d = doc(5)
    assert StatusDocument.from_json(json.loads(json.dumps(d.to_json()))) == d
    raw = d.to_json() | {"unknown_field": 1}
    raw["partitions"] = [*raw["partitions"], {"no": "actor"}, "junk"]
    assert StatusDocument.from_json(raw, W).partitions == d.partitions
    with pytest.raises(StatusFormatError, match="must be a JSON object"):
        StatusDocument.from_json([1, 2], W)
    with pytest.raises(StatusFormatError, match="bad event"):
        WorkerEvent.from_json({"t": "x"})


def test_parts_count_leases_and_do_not_dip_while_partitions_restart() -> None:
    restarting = doc(5, states=("failed", "starting"))
    snap, _ = build_snapshot(reading(10.0, restarting), None, app="shop", url="")
    assert snap.workers[0].partitions == 2
    # An older worker that does not publish its lease count: its active partition actors.
    old = doc(5, states=("failed", "running"), owned=None)
    snap, _ = build_snapshot(reading(10.0, old), None, app="shop", url="")
    assert snap.workers[0].partitions == 1


def test_rates_are_counter_deltas_over_server_time() -> None:
    first, counters = build_snapshot(reading(10.0, doc(100)), None, app="shop", url="")
    assert first.workers[0].rate is None and first.streams[0].appended_rate is None
    second, _ = build_snapshot(reading(12.0, doc(300)), counters, app="shop", url="")
    assert second.workers[0].rate == 200.0  # (2 partitions x 200) / 2 s
    assert second.streams[0].processed_rate == 200.0
    assert second.streams[0].appended_rate == 2.0  # 2 partitions x 2 entries / 2 s
    assert [p.rate for p in second.partitions] == [100.0, 100.0]
    assert second.streams[0].length == 100 and second.coordinator.unowned == 0


def test_plan_names_every_reply_and_parse_reads_them_by_name() -> None:
    queries = plan("shop", [W], LAYOUT)
    names = [q.name for q in queries]
    assert len(names) == len(set(names))
    assert ("pending", "bill", "orders", 1) in names
    replies = {q.name: None for q in queries}
    replies["time"] = [b"100", b"500000"]
    replies["members"] = [W.encode()]
    replies[("status", W)] = json.dumps(doc(1).to_json()).encode()
    replies[("info", "orders", 1)] = [b"length", 7, b"entries-added", 9]
    replies[("lease", "bill", "orders", 1)] = W.encode()
    replies[("pending", "bill", "orders", 1)] = [2, b"99000-0", b"99500-0", []]
    r = parse(replies, [W], LAYOUT)
    assert r.now == 100.5 and r.members == (W,) and r.docs[W] == doc(1)
    assert r.partitions[("orders", 1)] == PartitionRead(length=7, added=9)
    assert r.slots[("bill", "orders", 1)] == SlotRead(owner=W, pending=2, oldest_pending_ms=99000)
    assert r.slots[("bill", "orders", 0)] == SlotRead()


def test_every_partition_field_of_the_schema_is_published() -> None:
    """Telemetry copies the fields the schema shares with the statistics by name and converts
    the rest: a schema field with neither would be published as its default, silently."""
    from actorstream._tree import telemetry
    from actorstream._tree.counters import PartitionStatistics

    statistics = {f.name for f in attrs.fields(PartitionStatistics)}
    schema = {f.name for f in attrs.fields(PartitionStatus)}
    assert schema <= statistics | telemetry._CONVERTED, schema - statistics
