"""The core runtime against real Redis: order, crash-restart, kill -9, graceful shutdown."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from actorstream import (
    ConfigError,
    LeaseTiming,
    Record,
    RestartPolicy,
    Retention,
    SendError,
    System,
    running,
)
from actorstream._transport import Client
from actorstream.testing import RedisServer, WorkerProcess

APPS = Path(__file__).parent / "apps"
FAST_LEASES = LeaseTiming(
    ttl=3.0, renew_interval=1.0, heartbeat_interval=0.5, member_timeout=3.0, self_fence_margin=0.5
)


class Order(Record):
    order_id: int
    amount: int


def make_system(url: str, name: str = "shop", **kw: Any) -> System:
    kw.setdefault("lease_timing", FAST_LEASES)
    return System(name, url, install_signal_handlers=False, **kw)


async def wait_until(predicate: Any, timeout: float = 20.0, poll: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(poll)


async def test_per_key_order_across_16_partitions_with_100k_events(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order, partitions=16, key="order_id")
    n = 100_000
    last: dict[int, int] = {}
    inversions = 0
    handled = 0
    done = trio.Event()

    @system.actor(orders, batch_size=200)
    async def bill(order: Order) -> None:
        nonlocal inversions, handled
        if last.get(order.order_id, -1) >= order.amount:
            inversions += 1
        last[order.order_id] = order.amount
        handled += 1
        if handled == n:
            done.set()

    async with system:
        await orders.send_many(Order(order_id=i % 5000, amount=i) for i in range(n))
    async with running(system) as runtime:
        with trio.fail_after(120):
            await done.wait()
        stats = runtime.statistics()
    assert inversions == 0
    assert handled == n
    assert len(last) == 5000
    assert {p.partition for p in stats.partitions} == set(range(16))
    # Events of one key all land in one partition: the partition is a function of the key.
    assert sum(p.processed for p in stats.partitions) == n


async def test_crash_restart_redelivers_the_same_event_first(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order, partitions=1, key="order_id")
    seen: list[int] = []
    crashed = False

    @system.actor(orders, max_deliveries=5)
    async def bill(order: Order) -> None:
        nonlocal crashed
        seen.append(order.amount)
        if order.amount == 5 and not crashed:
            crashed = True
            raise RuntimeError("transient failure")

    async with system:
        await orders.send_many([Order(order_id=1, amount=i) for i in range(10)])
    async with running(system) as runtime:

        async def all_done() -> bool:
            return len(seen) >= 11

        await wait_until(all_done)
        await trio.sleep(0.2)
        stats = runtime.statistics()
    # 0..5, then the failure, then 5 again first, then the rest: in order, one redelivery,
    # and no restart: the failure is contained in the partition actor.
    assert seen == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    (part,) = stats.partitions
    assert part.restarts == 0 and part.failed == 1
    assert part.processed == 10
    assert part.last_error is not None and "transient failure" in part.last_error


async def test_handler_timeout_is_a_crash(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    calls: list[int] = []

    @system.actor(orders, timeout=0.2, max_deliveries=5)
    async def slow(order: Order) -> None:
        calls.append(order.amount)
        if len(calls) == 1:
            await trio.sleep_forever()

    async with system:
        await orders.send(Order(order_id=1, amount=7))
    async with running(system) as runtime:

        async def twice() -> bool:
            return len(calls) >= 2

        await wait_until(twice)
        await trio.sleep(0.1)
        (part,) = runtime.statistics().partitions
    assert calls == [7, 7]
    assert part.restarts == 0 and part.failed == 1
    assert part.last_error is not None and "timeout" in part.last_error


async def test_undecodable_events_never_crash_the_worker(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    good: list[int] = []

    @system.actor(orders)
    async def bill(order: Order) -> None:
        good.append(order.amount)

    key = orders.stream_key(0)
    async with Client.from_url(redis_url) as client:
        await orders.send(Order(order_id=1, amount=1))
        await client.execute("XADD", key, "*", "f", "json", "d", b"{not json")
        await client.execute("XADD", key, "*", "f", "json", "d", b"\xff\xfe")
        await client.execute("XADD", key, "*", "f", "json", "d", b'{"order_id": 1}')
        await client.execute("XADD", key, "*", "f", "json", "d", b'{"order_id": "x", "amount": 1}')
        await client.execute("XADD", key, "*", "f", "nope", "d", b"{}")
        await client.execute("XADD", key, "*", "unrelated", "field")
        await orders.send(Order(order_id=1, amount=2))
        async with running(system) as runtime:

            async def both() -> bool:
                return len(good) == 2

            await wait_until(both)
            (part,) = runtime.statistics().partitions
        dlq = await client.execute("XRANGE", "as:{shop:orders:0}:dlq", "-", "+")
        pending = await client.execute("XPENDING", key, "bill")
    assert good == [1, 2]
    assert part.dead_lettered == 6
    assert part.state == "running"
    kinds = []
    for _id, flat in dlq:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        kinds.append(fields[b"kind"].decode())
    assert kinds == [
        "decode:json",
        "decode:utf8",
        "decode:schema",
        "decode:schema",
        "decode:format",
        "decode:format",
    ]
    assert pending[0] == 0  # everything acked: the good ones handled, the bad ones moved


async def test_graceful_stop_acks_everything_handled(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order, partitions=4, key="order_id")
    handled: collections.Counter[tuple[int, int]] = collections.Counter()

    @system.actor(orders)
    async def bill(order: Order) -> None:
        handled[(order.order_id, order.amount)] += 1
        await trio.sleep(0.001)

    async with system:
        await orders.send_many([Order(order_id=i % 10, amount=i) for i in range(400)])
    async with running(system):

        async def some() -> bool:
            return sum(handled.values()) >= 100

        await wait_until(some)
    first_run = sum(handled.values())
    assert first_run < 400  # stopped mid-way
    # A second worker handles the rest; nothing is handled twice.
    async with running(system):

        async def rest() -> bool:
            return len(handled) == 400

        await wait_until(rest)
    assert max(handled.values()) == 1


async def test_dict_events_and_send_many_errors(redis_url: str) -> None:
    system = make_system(redis_url)
    raw = system.stream("raw", partitions=4, key="user")
    got: list[dict[str, bytes]] = []

    @system.actor(raw)
    async def collect(event: dict[str, bytes]) -> None:
        got.append(event)

    async with system:
        await raw.send({"user": "ann", "n": 1, "f": 1.5, "b": b"\x00", "m": memoryview(b"mv")})
        with pytest.raises(TypeError):
            await raw.send({"user": "ann", "flag": True})
        async with running(system):

            async def one() -> bool:
                return len(got) == 1

            await wait_until(one)
    assert got == [{"user": b"ann", "n": b"1", "f": b"1.5", "b": b"\x00", "m": b"mv"}]


async def test_send_many_reports_exactly_what_was_sent(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order, partitions=2, key="order_id")
    async with Client.from_url(redis_url) as client:
        # Make partition 1's key the wrong type so XADD fails there only.
        await client.execute("SET", orders.stream_key(1), "not a stream")
        events = [Order(order_id=i, amount=i) for i in range(20)]
        async with system:
            with pytest.raises(SendError) as info:
                await orders.send_many(events)
    err = info.value
    sent_idx = {i for i, _ in err.sent}
    failed_idx = {i for i, _ in err.failed}
    assert sent_idx | failed_idx == set(range(20))
    assert not sent_idx & failed_idx
    assert all(orders.partition_of(events[i]) == 1 for i in failed_idx)
    assert all(orders.partition_of(events[i]) == 0 for i in sent_idx)
    assert failed_idx and sent_idx


async def test_vanished_group_is_reported_not_recreated(redis_url: str) -> None:
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    seen: list[int] = []

    @system.actor(orders)
    async def bill(order: Order) -> None:
        seen.append(order.amount)

    key = orders.stream_key(0)
    async with Client.from_url(redis_url) as client:
        async with running(system) as runtime:
            await orders.send(Order(order_id=1, amount=1))

            async def one() -> bool:
                return seen == [1]

            await wait_until(one)
            await client.execute("XGROUP", "DESTROY", key, "bill")
            await orders.send(Order(order_id=1, amount=2))

            async def lost() -> bool:
                parts = runtime.statistics().partitions
                return bool(parts) and parts[0].state == "group-lost"

            await wait_until(lost)
            groups = await client.execute("XINFO", "GROUPS", key)
            assert groups == []  # not silently recreated
            assert seen == [1]
            # The operator recreates it where they choose; the actor resumes from there.
            await client.execute("XGROUP", "CREATE", key, "bill", "0")

            async def resumed() -> bool:
                return seen[-1:] == [2]

            await wait_until(resumed, timeout=20)


def test_bad_declarations_are_rejected_with_precise_messages() -> None:
    system = System("shop", "redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="partitions must be an integer >= 1"):
        system.stream("a", record=Order, partitions=0, key="order_id")
    with pytest.raises(ConfigError, match="stream name 'bad:name'"):
        system.stream("bad:name", record=Order)
    with pytest.raises(ConfigError, match="key field 'nope' is not a field of Order"):
        system.stream("b", record=Order, partitions=4, key="nope")
    with pytest.raises(ConfigError, match="need a key"):
        system.stream("c", record=Order, partitions=4)
    with pytest.raises(ConfigError, match="codec"):
        system.stream("d", record=Order, codec="yaml")
    s = system.stream("e", record=Order)
    with pytest.raises(ConfigError, match="timeout"):
        system.actor(s, timeout=-1)
    with pytest.raises(ConfigError, match="max_deliveries"):
        system.actor(s, max_deliveries=0)
    with pytest.raises(ConfigError, match="batch_size"):
        system.actor(s, batch_size=0)
    with pytest.raises(ConfigError, match="async def"):
        system.actor(s)(lambda e: None)
    with pytest.raises(ConfigError, match="renew_interval"):
        LeaseTiming(ttl=3, renew_interval=2)
    with pytest.raises(ConfigError, match="maxlen"):
        Retention(maxlen=0)
    with pytest.raises(ConfigError, match="system name"):
        System("no spaces")
    with pytest.raises(ConfigError, match="shutdown_grace"):
        System("ok", shutdown_grace=-1)


# -- worker processes ----------------------------------------------------------------------------


def _app_worker(server: RedisServer, name: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        str(APPS / "orders_app.py"),
        redis_url=server.url,
        env={"APP_NAME": name, **env},
        name=name,
    )


async def _handled(client: Client, app: str) -> list[tuple[int, int, int]]:
    raw = await client.execute("LRANGE", f"{app}:handled", 0, -1)
    out = []
    for item in raw:
        k, s, pid = item.decode().split(":")
        out.append((int(k), int(s), int(pid)))
    return out


async def _send_orders(url: str, app: str, n: int, keys: int, partitions: int = 8) -> None:
    system = System(app, url)

    class Order(Record):  # the app's record shape
        key: int
        seq: int

    orders = system.stream("orders", record=Order, partitions=partitions, key="key")
    async with system:
        await orders.send_many(Order(key=i % keys, seq=i) for i in range(n))


async def test_no_loss_across_kill_9_of_a_worker(redis_server: RedisServer) -> None:
    n = 3000
    app = "killapp"
    await _send_orders(redis_server.url, app, n, keys=50)
    first = _app_worker(redis_server, app, HANDLE_DELAY="0.001").start()
    try:
        async with Client.from_url(redis_server.url) as client:

            async def some() -> bool:
                return len(await _handled(client, app)) >= 500

            await wait_until(some, timeout=30)
            first.kill()
            await first.wait_exited()
            second = _app_worker(redis_server, app).start()
            try:

                async def everything() -> bool:
                    return len({(k, s) for k, s, _ in await _handled(client, app)}) == n

                await wait_until(everything, timeout=40)
                handled = await _handled(client, app)
            finally:
                second.terminate()
                second.close()
    finally:
        first.close()
    keys_seqs = [(k, s) for k, s, _ in handled]
    assert set(keys_seqs) == {(i % 50, i) for i in range(n)}
    # Duplicates are bounded by what was in flight (one read batch per partition) at the kill.
    dupes = len(keys_seqs) - n
    assert dupes <= 8 * 50
    # Per key, first deliveries follow stream order.
    firsts: dict[int, list[int]] = collections.defaultdict(list)
    seen: set[tuple[int, int]] = set()
    for k, s, _ in handled:
        if (k, s) not in seen:
            seen.add((k, s))
            firsts[k].append(s)
    assert all(v == sorted(v) for v in firsts.values())


async def test_sigterm_hands_off_with_zero_duplicates(redis_server: RedisServer) -> None:
    n = 2000
    app = "termapp"
    await _send_orders(redis_server.url, app, n, keys=40)
    first = _app_worker(redis_server, app, HANDLE_DELAY="0.002").start()
    try:
        async with Client.from_url(redis_server.url) as client:

            async def some() -> bool:
                return len(await _handled(client, app)) >= 300

            await wait_until(some, timeout=30)
            first.terminate()
            with trio.fail_after(20):
                code = await first.wait_exited()
            assert code == 0, first.output()
            assert "worker stopped cleanly" in first.output()
            # Leases were released at once: nobody holds one now.
            leases = [
                await client.execute("GET", f"as:{{{app}:orders:{p}}}:lease:handle")
                for p in range(8)
            ]
            assert leases == [None] * 8
            second = _app_worker(redis_server, app).start()
            try:

                async def everything() -> bool:
                    return len(await _handled(client, app)) >= n

                await wait_until(everything, timeout=40)
                await trio.sleep(0.5)
                handled = await _handled(client, app)
            finally:
                second.terminate()
                second.close()
    finally:
        first.close()
    pairs = [(k, s) for k, s, _ in handled]
    assert len(pairs) == n, f"{len(pairs) - len(set(pairs))} duplicates"
    assert set(pairs) == {(i % 40, i) for i in range(n)}
    assert len({pid for _, _, pid in handled}) == 2



async def test_poison_event_is_dead_lettered_alone_and_its_batch_continues(
    redis_url: str,
) -> None:
    system = make_system(redis_url, restart_policy=RestartPolicy(backoff_initial=0.01))
    orders = system.stream("orders", record=Order)
    handled: list[int] = []

    @system.actor(orders, max_deliveries=3, batch_size=50)
    async def bill(order: Order) -> None:
        if order.amount == 3:
            raise ValueError("poison")
        handled.append(order.amount)

    async with system:
        await orders.send_many([Order(order_id=1, amount=i) for i in range(10)])
        async with running(system) as runtime:

            async def all_handled() -> bool:
                return len(handled) == 9

            await wait_until(all_handled)
            await trio.sleep(0.2)
            (part,) = runtime.statistics().partitions
        dlq = await system.client().execute("XRANGE", "as:{shop:orders:0}:dlq", "-", "+")
    assert handled == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert len(dlq) == 1
    fields = dict(zip(dlq[0][1][::2], dlq[0][1][1::2], strict=True))
    assert fields[b"kind"] == b"max_deliveries"
    assert fields[b"deliveries"] == b"3"  # its third delivery failed: no fourth
    assert b"poison" in fields[b"error"]
    assert re.search(rb'test_runtime\.py", line \d+, in bill', fields[b"trace"])
    assert part.dead_lettered == 1 and part.restarts == 0 and part.failed == 3


async def test_worker_exits_non_zero_when_the_system_gives_up(redis_server: RedisServer) -> None:
    system = System("crashloop", redis_server.url)

    class Job(Record):
        n: int

    jobs = system.stream("jobs", record=Job)
    async with system:
        await jobs.send(Job(n=1))
    worker = WorkerProcess(
        "-m", "actorstream", "worker", str(APPS / "crashloop_app.py") + ":system",
        redis_url=redis_server.url, name="crashloop",
    ).start()
    try:
        with trio.fail_after(30):
            code = await worker.wait_exited()
    finally:
        worker.close()
    assert code == 1, worker.output()
    last = worker.output().strip().splitlines()[-1]
    assert last.startswith("actorstream: error: supervisor 'partitions/work[0]' gave up"), last
    assert "last crash: RuntimeError: simulated bug in the runtime" in last
    # The runtime's crashes were logged as they happened; the exit says it in one line.
    assert last.endswith("(-v or ACTORSTREAM_TRACEBACK=1 shows the traceback)"), last


async def test_second_signal_exits_at_once(redis_server: RedisServer) -> None:
    app = "slowapp"
    await _send_orders(redis_server.url, app, 50, keys=5)
    worker = _app_worker(redis_server, app, HANDLE_DELAY="30").start()
    try:
        with trio.fail_after(20):
            await worker.wait_for_output("worker starting")
        await trio.sleep(1.5)  # handlers are now sleeping in the middle of an event
        worker.terminate()
        await trio.sleep(1.0)
        assert worker.running  # draining: waiting for in-flight handlers (grace 10 s)
        started = trio.current_time()
        worker.terminate()
        with trio.fail_after(5):
            await worker.wait_exited()
        assert trio.current_time() - started < 5
    finally:
        worker.close()


async def test_pending_entries_trimmed_by_someone_else_are_counted_not_fatal(
    redis_url: str,
) -> None:
    """Scenario 17: a previous owner's pending entries were trimmed away (XTRIM by an operator).

    The new owner's claim finds them deleted: they are counted (`trimmed`), reported, and
    dropped from the pending list; nothing crashes and newer events are handled in order.
    """
    system = make_system(redis_url)
    orders = system.stream("orders", record=Order)
    seen: list[int] = []

    @system.actor(orders)
    async def bill(order: Order) -> None:
        seen.append(order.amount)

    key = orders.stream_key(0)
    async with system:
        client = system.client()
        await orders.send_many([Order(order_id=1, amount=i) for i in range(5)])
        await client.execute("XGROUP", "CREATE", key, "bill", "0")
        await client.execute("HSET", "as:{shop:orders:0}:meta", "group:bill", "1")
        # A previous owner read them (they are pending for it) and died; then the stream was
        # trimmed under them.
        await client.execute("XREADGROUP", "GROUP", "bill", "ghost", "STREAMS", key, ">")
        await client.execute("XTRIM", key, "MAXLEN", "0")
        await orders.send_many([Order(order_id=1, amount=i) for i in range(5, 8)])
        async with running(system) as runtime:

            async def newer_handled() -> bool:
                return seen == [5, 6, 7]

            await wait_until(newer_handled)
            (part,) = runtime.statistics().partitions
            kinds = [kind for _t, kind, _m in runtime.events]
        pending = await client.execute("XPENDING", key, "bill")
    assert part.trimmed == 5
    assert part.restarts == 0 and part.state == "running"
    assert "trimmed" in kinds
    assert pending[0] == 0
