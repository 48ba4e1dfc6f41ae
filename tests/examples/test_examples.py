"""The examples, tested the way the docs tell users to test their own actors: with the Harness
(``actorstream.testing``) and the pytest plugin's fixtures. What a handler did is read back from
Redis (dead letters, output streams, group state), never counted from handler calls."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
import trio

from actorstream import System
from actorstream.testing import Harness, NotIdle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def quickstart() -> Iterator[ModuleType]:
    yield load("quickstart")
    sys.modules.pop("example_quickstart", None)


async def test_quickstart_bills_every_order(
    quickstart: ModuleType, actorstream_harness: Callable[..., Harness],
    capsys: pytest.CaptureFixture[str],
) -> None:
    Order, orders = quickstart.Order, quickstart.orders
    now = datetime.now(UTC)
    sent = [Order(order_id=i % 100, amount=i, created=now) for i in range(1000)]
    async with actorstream_harness(quickstart.system) as h:
        await orders.send_many(sent)
        await h.wait_idle(timeout=30)
        assert await h.dead_letters() == []
    billed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("billing")]
    # Per order_id (the key), the amounts came in the order they were sent.
    by_key: dict[str, list[int]] = {}
    for line in billed:
        key, amount = line.removeprefix("billing order ").split(": ")
        by_key.setdefault(key, []).append(int(amount))
    assert sum(len(v) for v in by_key.values()) == len(sent)
    assert all(v == sorted(v) for v in by_key.values())


def test_dead_letters_example_from_a_plain_test(
    actorstream_harness: Callable[..., Harness],
) -> None:
    """A plain (not async) test: ``Harness.run`` runs the scenario in its own trio run."""
    example = load("dead_letters")
    Payment, payments = example.Payment, example.payments
    example.refuse_negative = True

    async def scenario(h: Harness) -> None:
        await payments.send_many([Payment(account=i % 5, cents=(-50 if i in (3, 11) else 100 + i))
                                  for i in range(20)])
        await h.wait_idle(timeout=30)
        letters = await h.dead_letters()
        assert len(letters) == 2
        assert all("negative amount" in (dl.error or "") for dl in letters)

    try:
        actorstream_harness(example.system).run(scenario)
    finally:
        sys.modules.pop("example_dead_letters", None)


async def test_demo_app_a_poison_order_is_dead_lettered(
    actorstream_harness: Callable[..., Harness],
) -> None:
    example = load("demo_app")
    Order, orders, poison = example.Order, example.orders, 997
    try:
        # One poison order among good ones (several at once, on several partitions, would
        # read as an outage of the gateway: the partitions would back off instead).
        events = [Order(order_id=i, customer=f"c{i % 7}", amount=poison * 3 if i == 50 else 1 + i)
                  for i in range(100)]
        sys.modules["actorstream._demo.app"]._rng.seed(7)  # the same transient failures each run
        async with actorstream_harness(example.system) as h:
            await orders.send_many(events)
            await h.wait_idle(timeout=60)
            letters = await h.dead_letters(orders)
        assert [dl.error for dl in letters] == [
            "ValueError: order 50: amount 2991 is not billable"]
    finally:
        sys.modules.pop("example_demo_app", None)


async def test_wait_idle_says_what_is_left(actorstream_harness: Callable[..., Harness]) -> None:
    """Not idle while a handler holds an event: the error names the partition and what is left."""
    system = System("held")
    jobs = system.stream("jobs", partitions=2, key="job")
    release = trio.Event()

    @system.actor(jobs)
    async def work(job: dict[str, bytes]) -> None:
        await release.wait()

    async with actorstream_harness(system) as h:
        await jobs.send({"job": "1"})
        with pytest.raises(NotIdle, match=r"work on jobs\[\d\]: lag 0, pending 1"):
            await h.wait_idle(timeout=0.5)
        release.set()
        await h.wait_idle(timeout=10)


async def test_a_hundred_events_figure(actorstream_harness: Callable[..., Harness]) -> None:
    """The figure the testing page quotes (printed, not asserted: timings are not pass/fail)."""
    example = load("quickstart")
    Order, orders = example.Order, example.orders
    now = datetime.now(UTC)
    try:
        start = time.perf_counter()
        async with actorstream_harness(example.system) as h:
            up = time.perf_counter()
            await orders.send_many([Order(order_id=i, amount=i, created=now) for i in range(100)])
            await h.wait_idle(timeout=30)
            done = time.perf_counter()
        print(f"harness up in {up - start:.3f}s; 100 events sent and handled in "
              f"{done - up:.3f}s")
    finally:
        sys.modules.pop("example_quickstart", None)
