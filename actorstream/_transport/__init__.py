"""All socket I/O of actorstream: a trio-native Redis client on hiredis (docs/transport.md)."""

from ._client import Client, ClientStatistics, Script, default_client_name, evalsha_on
from ._cluster import Connection, SlotConnection, command_slot, slot_of
from ._config import ConnectionConfig, redact_url
from ._connection import Arg, Command, NodeConnection, pack, pack_head, pack_last
from ._errors import SlotMovedError, UnblockedError, reply_error

__all__ = [
    "Arg",
    "Client",
    "ClientStatistics",
    "Command",
    "Connection",
    "ConnectionConfig",
    "NodeConnection",
    "Script",
    "SlotConnection",
    "SlotMovedError",
    "UnblockedError",
    "command_slot",
    "default_client_name",
    "evalsha_on",
    "pack",
    "pack_head",
    "pack_last",
    "redact_url",
    "reply_error",
    "slot_of",
]
