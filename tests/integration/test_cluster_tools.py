"""`top --once`, `status --json` and `dlq` answer the same on 3 primaries as on one Redis.

The same scenario runs on both (a worker handles 40 jobs, two of them poison and dead-lettered);
the tools' outputs are compared after removing what differs by nature (worker ids, times, ids).
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from actorstream.testing import RedisCluster, RedisServer, WorkerProcess

APP = textwrap.dedent(
    """
    from actorstream import Record, System

    system = System("tooltest", telemetry_interval=0.2)

    class Job(Record):
        job_id: int
        poison: bool = False

    jobs = system.stream("jobs", record=Job, partitions=6, key="job_id")

    @system.actor(jobs, max_deliveries=1, batch_size=1)
    async def run(job: Job) -> None:
        if job.poison:
            raise ValueError(f"job {job.job_id} is poison")
    """
)
N_JOBS = 40  # and one more sent before the worker starts
POISON = (7, 21)


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorstream", *args], capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin", "ACTORSTREAM_REDIS_URL": url},
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def settle(app: Path, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 40
    while True:
        doc = json.loads(ok(cli("status", "--json", f"{app}:system", url=url)))
        parts = doc["partitions"]
        if (
            sum(p["processed"] or 0 for p in parts) == N_JOBS + 1 - len(POISON)
            and sum(p["dead_letters"] for p in parts) == len(POISON)
            and all(p["lag"] == 0 and p["pending"] == 0 and p["state"] == "running" for p in parts)
        ):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.3)


_IDS = re.compile(r"\b\d{10,}-\d+\b|\d{4}-\d\d-\d\dT[\d:.]+Z")  # ids and times differ


def answers(tmp_path: Path, url: str) -> dict[str, Any]:
    tmp_path.mkdir()
    app = tmp_path / "toolapp.py"
    app.write_text(APP)
    ok(cli("send", f"{app}:jobs", '{"job_id": 1000}', url=url))
    # No worker yet: top finds the streams itself (a SCAN of every primary).
    unowned = ok(cli("top", "--once", "tooltest", url=url))
    with WorkerProcess("-m", "actorstream", "worker", f"{app}:system", redis_url=url) as worker:
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_text("".join(
            json.dumps({"job_id": i, "poison": i in POISON}) + "\n" for i in range(N_JOBS)
        ))  # fmt: skip
        ok(cli("send", f"{app}:jobs", "--file", str(jobs), url=url))
        doc = settle(app, url)
        assert worker.running, worker.output()
        top = ok(cli("top", "--once", f"{app}:system", url=url))
        listed = ok(cli("dlq", "list", f"{app}:system", url=url))
        counts = ok(cli("dlq", "counts", f"{app}:system", url=url))
        replay = ok(cli("dlq", "replay", f"{app}:system", "--dry-run", url=url))
        purged = ok(cli("dlq", "purge", f"{app}:system", "--yes", url=url))
        after = ok(cli("dlq", "counts", f"{app}:system", url=url))
    partitions = [
        {k: p[k] for k in ("partition", "processed", "dead_letters", "lag", "pending", "state")}
        for p in doc["partitions"]
    ]
    return {
        "partitions": partitions,
        "unowned": doc["coordinator"]["unowned"],
        "top": sorted(_top_rows(top)),
        "top_before_workers": sorted(_top_rows(unowned)),
        "dlq_list": sorted(_IDS.sub("<id>", line) for line in listed.splitlines()),
        "dlq_counts": counts,
        "dlq_replay": _IDS.sub("<id>", replay),
        "dlq_purge": purged,
        "dlq_after": after,
    }


def _top_rows(frame: str) -> list[str]:
    """The stream and partition rows of a ``top`` frame, without owners, rates and times."""
    rows = []
    for line in frame.splitlines():
        cols = line.split()
        if cols[:1] == ["jobs"] and len(cols) == 8:  # STREAM PARTS APPENDED PROCESSED LENGTH ...
            rows.append(" ".join(cols[:2] + cols[4:]))
        elif cols and cols[0].startswith("run[") and len(cols) == 10:  # PARTITION OWNER EP ...
            rows.append(" ".join([cols[0], *cols[2:6], *cols[8:]]))
        elif "unowned" in line:
            rows.append(line.rsplit("·", 1)[-1].strip())
    return rows


def test_tools_give_the_same_answers_on_three_primaries(tmp_path: Path) -> None:
    def on_one_redis() -> dict[str, Any]:
        with RedisServer() as server:
            return answers(tmp_path / "single", server.url)

    def on_three_primaries() -> dict[str, Any]:
        with RedisCluster(primaries=3) as cluster:
            owners = {cluster.owner_of(s).port for s in _partition_slots("tooltest", "jobs", 6)}
            assert len(owners) > 1  # the partitions really live on different primaries
            return answers(tmp_path / "cluster", cluster.url)

    # The two scenarios share nothing (servers, app files): they run side by side, each mostly
    # waiting for its command-line processes.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        single_run, spread_run = pool.submit(on_one_redis), pool.submit(on_three_primaries)
        single, spread = single_run.result(), spread_run.result()
    assert single["dlq_list"] and len(single["top"]) == 8, single  # stream, 6 rows, unowned
    assert any(row.startswith("jobs 6 1 ") for row in single["top_before_workers"]), single
    assert single == spread


def _partition_slots(app: str, stream: str, partitions: int) -> list[int]:
    from actorstream._core import keys
    from actorstream._transport import slot_of

    return [slot_of(keys.stream_key(app, stream, p)) for p in range(partitions)]
