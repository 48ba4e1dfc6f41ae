"""The Redis key layout. Every key of one partition shares one hash tag (Cluster-ready).

    as:{<app>:<stream>:<p>}:s                 the partition's stream of events
    as:{<app>:<stream>:<p>}:lease:<actor>     lease of (actor, partition): holder worker id, PX ttl
    as:{<app>:<stream>:<p>}:epoch:<actor>     fencing token, only ever incremented
    as:{<app>:<stream>:<p>}:meta              groups we created (to detect a vanished group)
    as:{<app>:<stream>:<p>}:dlq               dead letters of this partition (all actors)
    as:{<app>:<stream>:<p>}:dlqidx            original id -> dead-letter id (idempotent moves)
    as:{<app>:<stream>:<p>}:t:<table>         a table's keys of this partition (hash: key -> value)
    as:{<app>:<stream>:<p>}:outbox:<actor>    exactly-once outputs to other Cluster slots, until
                                              forwarded (stream; ``_core/outbox.py``)
    as:{<app>:<stream>:<p>}:fwd               forward marks of the sources that append here
                                              (hash: source -> "<epoch> <last outbox id>")
    as:{<app>}:members                        zset worker id -> expiry (server ms)
    as:{<app>}:worker:<id>                    worker info hash (host, pid, started, version)
    as:{<app>}:incarnation                    a token set once, never expiring: if it changes,
                                              Redis lost the app's data
    as:{<app>:leader}:lease / :epoch          the leader lease and its fencing token
    as:{<app>:telemetry}:status:<id>          telemetry snapshot for `top` (JSON, TTL)
    as:{<app>:telemetry}:events               a short log of notable events for `top`

Consumer groups are named after actors; consumers after worker ids.

Redis Cluster: every script and transaction touches the keys of one tag, so one slot. The
membership, leader and telemetry keys have a tag each (names cannot contain ':', so no partition
tag ``{app:stream:p}`` can equal them), so a Cluster spreads them like partitions (docs/cluster.md).
"""

from __future__ import annotations

import re

from .errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    """Names end up inside keys: keep them to a safe alphabet so the layout cannot break."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not valid: use 1-64 characters from letters, digits, "
            "'_', '.', '-', starting with a letter or digit (no ':', '{', '}' or spaces)"
        )
    return name


def partition_tag(app: str, stream: str, partition: int) -> str:
    return f"as:{{{app}:{stream}:{partition}}}"


def stream_key(app: str, stream: str, partition: int) -> str:
    return f"{partition_tag(app, stream, partition)}:s"


def lease_key(app: str, stream: str, partition: int, actor: str) -> str:
    return f"{partition_tag(app, stream, partition)}:lease:{actor}"


def epoch_key(app: str, stream: str, partition: int, actor: str) -> str:
    return f"{partition_tag(app, stream, partition)}:epoch:{actor}"


def meta_key(app: str, stream: str, partition: int) -> str:
    """Bookkeeping of the partition (which consumer groups we created), for GROUPLOST."""
    return f"{partition_tag(app, stream, partition)}:meta"


def dlq_key(app: str, stream: str, partition: int) -> str:
    return f"{partition_tag(app, stream, partition)}:dlq"


def dlq_index_key(app: str, stream: str, partition: int) -> str:
    return f"{partition_tag(app, stream, partition)}:dlqidx"


def table_key(app: str, stream: str, partition: int, table: str) -> str:
    """The hash of one table's keys in one partition: beside its stream, in the same slot."""
    return f"{partition_tag(app, stream, partition)}:t:{table}"


def outbox_key(app: str, stream: str, partition: int, actor: str) -> str:
    """Where an exactly-once actor's commits put outputs to other slots (a Redis Cluster)."""
    return f"{partition_tag(app, stream, partition)}:outbox:{actor}"


def punctuators_key(app: str, stream: str, partition: int, actor: str) -> str:
    """The marks (last tick fired) of an actor's punctuators on one partition: a hash."""
    return f"{partition_tag(app, stream, partition)}:pt:{actor}"


def app_tag(app: str) -> str:
    return f"as:{{{app}}}"


def members_key(app: str) -> str:
    return f"{app_tag(app)}:members"


def worker_key(app: str, worker_id: str) -> str:
    return f"{app_tag(app)}:worker:{worker_id}"


def incarnation_key(app: str) -> str:
    return f"{app_tag(app)}:incarnation"


def leader_tag(app: str) -> str:
    return f"as:{{{app}:leader}}"


def telemetry_tag(app: str) -> str:
    return f"as:{{{app}:telemetry}}"


def status_key(app: str, worker_id: str) -> str:
    return f"{telemetry_tag(app)}:status:{worker_id}"


def status_pattern(app: str) -> str:
    return f"{telemetry_tag(app)}:status:*"


def leader_lease_key(app: str) -> str:
    return f"{leader_tag(app)}:lease"


def leader_epoch_key(app: str) -> str:
    return f"{leader_tag(app)}:epoch"


def events_key(app: str) -> str:
    return f"{telemetry_tag(app)}:events"
