"""Map Redis error replies to the ``redis.exceptions`` classes users already catch."""

from __future__ import annotations

from redis import exceptions as rex

from .._core.errors import FencedError, GroupLostError

_BY_CODE: dict[str, type[rex.RedisError]] = {
    "NOSCRIPT": rex.NoScriptError,
    "READONLY": rex.ReadOnlyError,
    "LOADING": rex.BusyLoadingError,
    "OOM": rex.OutOfMemoryError,
    "EXECABORT": rex.ExecAbortError,
    "NOPERM": rex.NoPermissionError,
    "TRYAGAIN": rex.TryAgainError,
    "MOVED": rex.MovedError,
    "ASK": rex.AskError,
    "CLUSTERDOWN": rex.ClusterDownError,
    "CROSSSLOT": rex.ClusterCrossSlotError,
    "MASTERDOWN": rex.MasterDownError,
}



class UnblockedError(rex.ResponseError):
    """``-UNBLOCKED``: a blocked read was released because the node changed role or lost the key.

    Nothing was read; the read can be sent again (after a slot-map refresh on a Cluster).
    """


class SlotMovedError(rex.ConnectionError):
    """A Cluster slot moved under a connection that held WATCH or MULTI state on it.

    The state cannot follow the slot to its new node, so the connection is given up like a lost
    one (callers already treat ``ConnectionError`` as "Redis unavailable, start the fenced
    session again"). ``replies`` holds the replies as received (errors in place); ``ran`` says
    whether an ``EXEC`` in the request was executed.
    """

    def __init__(self, message: str, replies: list[object] | None = None, ran: bool = False):
        super().__init__(message)
        self.replies = replies or []
        self.ran = ran


_AUTH_CODES = ("WRONGPASS", "NOAUTH")
_AUTH_MESSAGES = ("ERR invalid password", "ERR AUTH <password> called without any password")


def reply_error(message: str) -> Exception:
    """Build the exception for one error reply; hiredis calls this for every ``-ERR`` line.

    The exception is returned in place of the reply (never raised by the reader), so one failing
    command in a pipeline does not hide the replies of the others.
    """
    code = message.split(" ", 1)[0]
    if code == "FENCED":
        return FencedError(message)
    if code == "GROUPLOST":
        return GroupLostError(message)
    if code in _AUTH_CODES or message.startswith(_AUTH_MESSAGES):
        return rex.AuthenticationError(message)
    if code == "UNBLOCKED":
        return UnblockedError(message)
    if message.startswith("ERR max number of clients reached"):
        return rex.ConnectionError(message)
    cls = _BY_CODE.get(code)
    if cls is None:
        return rex.ResponseError(message)
    # MOVED/ASK take (resp) and parse it; give them what they expect.
    if cls in (rex.MovedError, rex.AskError):
        return cls(message.split(" ", 1)[1] if " " in message else message)
    return cls(message)
