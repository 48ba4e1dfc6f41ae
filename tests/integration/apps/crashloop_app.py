"""A worker whose runtime fails (a simulated bug in actorstream itself) and whose restart
intensity is tiny: it must give up and exit 1 with one line naming the supervisor.

Handler failures can no longer do this (they are contained at their partition); the
``runtime_bug`` below replaces a step of the partition actor's start (the runtime's own).
"""

from __future__ import annotations

from typing import Any

from actorstream import Record, RestartPolicy, System
from actorstream._tree.link import PartitionLink

system = System(
    "crashloop",
    restart_policy=RestartPolicy(max_restarts=2, within=60.0, backoff_initial=0.01,
                                 backoff_max=0.05),
)


class Job(Record):
    n: int


jobs = system.stream("jobs", record=Job)


async def runtime_bug(self: Any, conn: Any) -> None:
    raise RuntimeError("simulated bug in the runtime")


PartitionLink.claim_previous_owners = runtime_bug  # type: ignore[method-assign]


@system.actor(jobs)
async def work(job: Job) -> None:
    pass
