"""All socket I/O of actorstream: a trio-native Redis client on hiredis (DESIGN.md section 2)."""

from ._client import Client, ClientStatistics, Script, default_client_name, evalsha_on
from ._config import ConnectionConfig, redact_url
from ._connection import Arg, Command, Connection, pack
from ._errors import reply_error

__all__ = [
    "Arg",
    "Client",
    "ClientStatistics",
    "Command",
    "Connection",
    "ConnectionConfig",
    "Script",
    "default_client_name",
    "evalsha_on",
    "pack",
    "redact_url",
    "reply_error",
]
