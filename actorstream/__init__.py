"""actorstream: ordered, fault-tolerant event processing on Redis Streams with trio.

Declare a ``System``, its streams (partitioned by key) and actors, and run workers with
``trio.run(system.start)``. See README.md and docs/.
"""

from ._actors import ActorSettings
from ._codecs import Codec, Compression, register_codec, register_compression
from ._core.deadletter import DeadLetter
from ._core.errors import (
    ActorstreamError,
    ConfigError,
    DecodeError,
    FencedError,
    GroupLostError,
    SelfFenced,
    SupervisorGaveUp,
    TableError,
)
from ._core.leasetiming import LeaseTiming
from ._core.policy import RestartPolicy
from ._core.punctuation import Tick
from ._core.settings import Settings
from ._core.windows import Hopping, Session, Tumbling, Window
from ._middleware import ErrorHook, EventInfo, Middleware, Next, Outcome
from ._ops.logs import configure_logging
from ._records import Record
from ._redis import Pipeline, RedisClient
from ._streams import Retention, SendError, Stream
from ._system import System, WorkerStatistics, running
from ._tables import Table
from ._tree.counters import PartitionState, PartitionStatistics
from ._tree.events import Events
from ._tree.supervisor import (
    ChildContext,
    ChildState,
    Restart,
    Strategy,
    Supervisor,
    SupervisorStatistics,
)
from ._version import __version__
from ._windows import PerWindow, WindowedTable

__all__ = [
    "ActorSettings",
    "ActorstreamError",
    "ChildContext",
    "ChildState",
    "Codec",
    "Compression",
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "ErrorHook",
    "EventInfo",
    "Events",
    "FencedError",
    "GroupLostError",
    "Hopping",
    "LeaseTiming",
    "Middleware",
    "Next",
    "Outcome",
    "PartitionState",
    "PartitionStatistics",
    "PerWindow",
    "Pipeline",
    "Record",
    "RedisClient",
    "Restart",
    "RestartPolicy",
    "Retention",
    "SelfFenced",
    "SendError",
    "Session",
    "Settings",
    "Strategy",
    "Stream",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorStatistics",
    "System",
    "Table",
    "TableError",
    "Tick",
    "Tumbling",
    "Window",
    "WindowedTable",
    "WorkerStatistics",
    "__version__",
    "configure_logging",
    "register_codec",
    "register_compression",
    "running",
]
