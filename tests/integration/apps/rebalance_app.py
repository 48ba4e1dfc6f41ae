"""A worker app for the coordinator tests: like orders_app.py, plus partition and epoch.

Environment: ACTORSTREAM_REDIS_URL, APP_NAME, PARTITIONS, HANDLE_DELAY (seconds per event),
EXACTLY_ONCE, ORDERING and CONCURRENCY (see below), BATCH_SIZE, LEASE_TTL, LEASE_RENEW,
HEARTBEAT, MEMBER_TIMEOUT, FENCE_MARGIN, SHUTDOWN_GRACE,
CLOCK_STEP_FILE (scenario 19: a file holding seconds added to this worker's time.time()),
HOG_SECONDS (scenario 22: the first event handled by any worker of the app, picked by a SET NX
flag, blocks the whole process in a synchronous sleep inside the handler, like CPU-bound work: no
checkpoint, so no heartbeat, renewal or timeout can run; the hogging pid and event go to
`<app>:hog` as "pid:partition:epoch:seq", its handled-log entry is pushed after the sleep).

Each handled event is RPUSHed to `<app>:handled` as "key:seq:pid:partition:epoch" *before* the
handler returns, so the list is the ground truth of handling (at-least-once: duplicates are
visible), and (partition, epoch) -> pid shows which worker acted under which fencing token.
"""

from __future__ import annotations

import logging
import os
import time

import trio

from actorstream import LeaseTiming, Record, System
from actorstream._core.assignment import Slot

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

APP = os.environ.get("APP_NAME", "rebalance")
DELAY = float(os.environ.get("HANDLE_DELAY", "0"))
HOG = float(os.environ.get("HOG_SECONDS", "0"))
CLOCK_FILE = os.environ.get("CLOCK_STEP_FILE")
if CLOCK_FILE:
    # Scenario 19: this worker's wall clock (time.time) is stepped by the seconds written to
    # CLOCK_STEP_FILE, as an NTP step or an operator's `date -s` would. Monotonic time is not.
    _real_time = time.time

    def _stepped_time() -> float:
        try:
            with open(CLOCK_FILE) as f:
                return _real_time() + float(f.read() or 0)
        except (OSError, ValueError):
            return _real_time()

    time.time = _stepped_time
PID = os.getpid()

system = System(
    APP,
    lease_timing=LeaseTiming(
        ttl=float(os.environ.get("LEASE_TTL", "3")),
        renew_interval=float(os.environ.get("LEASE_RENEW", "1")),
        heartbeat_interval=float(os.environ.get("HEARTBEAT", "0.5")),
        member_timeout=float(os.environ.get("MEMBER_TIMEOUT", "3")),
        self_fence_margin=float(os.environ.get("FENCE_MARGIN", "0.5")),
    ),
    shutdown_grace=float(os.environ.get("SHUTDOWN_GRACE", "10")),
    telemetry_interval=0.2,
)


class Order(Record):
    key: int
    seq: int


orders = system.stream(
    "orders", record=Order, partitions=int(os.environ.get("PARTITIONS", "8")), key="key"
)

# EXACTLY_ONCE=1: the handler also counts events per key in a table and sends each event's
# count to the "outputs" stream, with processing="exactly_once" (the count, the output and the
# ack are committed together, fenced): the outputs then hold each seq once, with exact counts.
EXACTLY_ONCE = os.environ.get("EXACTLY_ONCE") == "1"


class Output(Record):
    key: int
    seq: int
    count: int


options: dict[str, object] = {}
if EXACTLY_ONCE:
    outputs = system.stream("outputs", record=Output, partitions=1)
    counts = system.table("counts", value=int, default=0)
    options = {"tables": [counts], "processing": "exactly_once"}
# ORDERING=key (or none): events of different keys in flight at once, CONCURRENCY of them.
if os.environ.get("ORDERING"):
    options["ordering"] = os.environ["ORDERING"]
    options["concurrency"] = int(os.environ.get("CONCURRENCY", "8"))


def _epoch(partition: int) -> int:
    worker = system._worker
    if worker is None:
        return -1
    counters = worker.partitions.counters.get(Slot("handle", partition))
    return -1 if counters is None else counters.epoch


@system.actor(orders, batch_size=int(os.environ.get("BATCH_SIZE", "20")), **options)  # type: ignore[arg-type]
async def handle(order: Order) -> None:
    if DELAY:
        await trio.sleep(DELAY)
    if EXACTLY_ONCE:
        counts[order.key] += 1
        await outputs.send(Output(key=order.key, seq=order.seq, count=counts[order.key]))
    p = orders.partition_of(order)
    epoch = _epoch(p)
    client = system.client()
    if HOG and await client.execute("SET", f"{APP}:hog-flag", PID, "NX"):
        await client.execute("RPUSH", f"{APP}:hog", f"{PID}:{p}:{epoch}:{order.seq}")
        print(f"hogging the CPU for {HOG}s on partition {p} epoch {epoch}", flush=True)
        time.sleep(HOG)  # noqa: ASYNC251 - on purpose: blocks the loop, no checkpoint
        print("hog done", flush=True)
    await client.execute("RPUSH", f"{APP}:handled", f"{order.key}:{order.seq}:{PID}:{p}:{epoch}")


def _dump_tasks() -> None:
    """Print the trio task tree (on SIGUSR1), to debug a stuck worker."""

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        frames = []
        coro: object = task.coro
        while coro is not None and getattr(coro, "cr_frame", None) is not None:
            frame = coro.cr_frame  # type: ignore[attr-defined]
            frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = coro.cr_await  # type: ignore[attr-defined]
        print("  " * depth + task.name, frames[-8:], flush=True)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)


async def main() -> None:
    async with trio.open_nursery() as nursery:

        async def dumper() -> None:
            import signal

            with trio.open_signal_receiver(signal.SIGUSR1) as signals:
                async for _ in signals:
                    _dump_tasks()

        nursery.start_soon(dumper)
        await system.start()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    print(f"worker starting pid={PID}", flush=True)
    trio.run(main)
    print("worker stopped cleanly", flush=True)
