"""A worker whose handler always fails and whose restart intensity is tiny: it must give up."""

from __future__ import annotations

from actorstream import Record, RestartPolicy, System

system = System(
    "crashloop",
    restart_policy=RestartPolicy(max_restarts=2, within=60.0, backoff_initial=0.01,
                                 backoff_max=0.05),
)


class Job(Record):
    n: int


jobs = system.stream("jobs", record=Job)


@system.actor(jobs, max_deliveries=100)
async def fail(job: Job) -> None:
    raise RuntimeError(f"job {job.n} always fails")
