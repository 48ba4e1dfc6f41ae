"""The plain loop of an actor with tables holds the table scope for a whole read batch: each
event's changes and outputs are still kept or undone per event, in order, against real Redis."""

from __future__ import annotations

from typing import Any

import trio

from actorstream import LeaseTiming, Record, System, running

FAST = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Click(Record):
    user: str
    n: int


class Seen(Record):
    user: str
    count: int
    n: int


class Big(Record):
    value: int


async def wait_for(pred: Any, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.02)


async def test_a_failure_mid_batch_undoes_only_its_event_and_outputs_keep_their_order(
    redis_url: str,
) -> None:
    system = System("batch", redis_url, install_signal_handlers=False, lease_timing=FAST)
    clicks = system.stream("clicks", record=Click, partitions=1, key="user")
    seen = system.stream("seen", record=Seen, partitions=1, key="user")
    counts = system.table("counts", value=int, default=0)
    failed: set[int] = set()

    @system.actor(clicks, tables=[counts], processing="exactly_once")
    async def count(click: Click) -> None:
        counts[click.user] += 1
        counts["touched-" + click.user] = click.n  # a second key, new on the first event
        await seen.send(Seen(click.user, counts[click.user], click.n))
        if click.n in (7, 8, 30) and click.n not in failed:
            failed.add(click.n)  # fails once, after changing and sending
            raise RuntimeError("nothing of this call may stay")

    async with system:
        await clicks.send_many([Click("ann" if i % 3 else "bob", i) for i in range(40)])
        async with running(system) as worker:
            await wait_for(lambda: sum(p.acked for p in worker.statistics().partitions) >= 40)
        assert await counts.snapshot() == {
            "ann": 26, "bob": 14, "touched-ann": 38, "touched-bob": 39,
        }
        entries = await system.client().execute("XRANGE", seen.stream_key(0), "-", "+")
    outputs = [seen.format.decode(fields) for _id, fields in entries]
    assert [o.n for o in outputs] == list(range(40))  # one each, in input order
    for user in ("ann", "bob"):
        assert [o.count for o in outputs if o.user == user] == list(
            range(1, 1 + sum(1 for o in outputs if o.user == user))
        )


async def test_a_value_the_codec_refuses_after_the_call_fails_only_that_event(
    redis_url: str,
) -> None:
    system = System("refuse", redis_url, install_signal_handlers=False, lease_timing=FAST)
    clicks = system.stream("clicks", record=Click, partitions=1, key="user")
    counts = system.table("counts", value=int, default=0)
    big = system.table("big", value=Big)

    @system.actor(clicks, tables=[counts, big], max_deliveries=2)
    async def keep(click: Click) -> None:
        counts[click.user] += 1
        # a Record is encoded when the call returned: 2**70 does not fit JSON's integers
        big[click.user] = Big(2**70 if click.n == 3 else click.n)

    async with system:
        await clicks.send_many([Click("ann", i) for i in range(6)])
        async with running(system) as worker:
            def settled() -> bool:
                stats = worker.statistics().partitions
                return sum(p.acked for p in stats) >= 5 and sum(
                    p.dead_lettered for p in stats) >= 1
            await wait_for(settled)
        assert await counts.read("ann") == 5  # the refused event left nothing behind
        assert await big.read("ann") == Big(5)
