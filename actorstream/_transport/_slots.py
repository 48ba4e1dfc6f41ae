"""Which arguments of a Redis command are keys, and which Cluster slot they hash to.

Pure functions over a command tuple (no I/O): the router, cluster pipelines and slot-bound
connections all ask these. Slots of repeated keys are cached, so CRC16 runs once per key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import exceptions as rex
from redis.crc import key_slot

from ._connection import Arg, Command

# -- which arguments are keys -------------------------------------------------------------------

_KEYLESS = frozenset(
    {
        "ACL",
        "ASKING",
        "AUTH",
        "BGREWRITEAOF",
        "BGSAVE",
        "CLIENT",
        "CLUSTER",
        "COMMAND",
        "CONFIG",
        "DEBUG",
        "DISCARD",
        "ECHO",
        "EXEC",
        "FAILOVER",
        "FUNCTION",
        "HELLO",
        "INFO",
        "LASTSAVE",
        "LATENCY",
        "LOLWUT",
        "MONITOR",
        "MULTI",
        "PING",
        "PUBLISH",
        "QUIT",
        "READONLY",
        "READWRITE",
        "REPLICAOF",
        "RESET",
        "ROLE",
        "SAVE",
        "SCRIPT",
        "SELECT",
        "SHUTDOWN",
        "SLAVEOF",
        "SLOWLOG",
        "SWAPDB",
        "TIME",
        "UNWATCH",
        "WAIT",
    }
)
#: Keyless commands whose effect must reach every primary (the first reply is returned).
EVERY_PRIMARY = frozenset({"FLUSHALL", "FLUSHDB", "SCRIPT LOAD", "SCRIPT FLUSH"})
#: Commands that see one node's keys only: run them on each of ``Client.primaries()``.
_PER_NODE = frozenset({"SCAN", "KEYS", "DBSIZE", "RANDOMKEY"})
_SCRIPTS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_STREAM_READS = frozenset({"XREAD", "XREADGROUP"})
_SUBCOMMAND_KEY = frozenset({"XINFO", "XGROUP", "OBJECT", "MEMORY"})
_ALL_KEYS = frozenset(
    {"DEL", "UNLINK", "EXISTS", "TOUCH", "MGET", "WATCH", "SINTER", "SUNION", "SDIFF", "PFCOUNT"}
)
_PAIRS = frozenset({"MSET", "MSETNX"})
_BLOCKING_POPS = frozenset({"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX"})


def arg_text(arg: Arg) -> str:
    if isinstance(arg, str):
        return arg.upper()
    if isinstance(arg, (bytes, memoryview)):
        return bytes(arg).decode(errors="replace").upper()
    return str(arg)


def _key_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, memoryview):
        return bytes(arg)
    return str(arg).encode()


def command_name(command: Command) -> str:
    name = arg_text(command[0])
    if name in ("SCRIPT", "CLUSTER", "CONFIG", "CLIENT") and len(command) > 1:
        return f"{name} {arg_text(command[1])}"
    return name


_DEFAULT, _NONE, _SCRIPT, _STREAMS, _SUB, _ALL, _PAIR, _BPOP, _NODE = range(9)
#: Command name (str or bytes, upper or lower case) -> where its keys are. Default: argument 1.
_KINDS: dict[Any, int] = {}
for _names, _where in (
    (_KEYLESS | EVERY_PRIMARY, _NONE),
    (_SCRIPTS, _SCRIPT),
    (_STREAM_READS, _STREAMS),
    (_SUBCOMMAND_KEY, _SUB),
    (_ALL_KEYS, _ALL),
    (_PAIRS, _PAIR),
    (_BLOCKING_POPS, _BPOP),
    (_PER_NODE, _NODE),
):
    for _name in _names:
        if " " not in _name:
            for _form in (_name, _name.lower()):
                _KINDS[_form] = _KINDS[_form.encode()] = _where

#: Slots of recently seen str/bytes keys (partition keys repeat): CRC16 once per key.
_SLOT_CACHE: dict[str | bytes, int] = {}
_SLOT_CACHE_SIZE = 1 << 16


def _kind(command: Command) -> int:
    name = command[0]
    kind = _KINDS.get(name) if type(name) is str or type(name) is bytes else None
    if kind is None:
        kind = _KINDS.get(arg_text(name), _DEFAULT)
        if (type(name) is str or type(name) is bytes) and len(_KINDS) < 4096:
            _KINDS[name] = kind  # remember this spelling of the name
    return kind


def command_keys(command: Command) -> Sequence[Arg]:
    """The key arguments of a command (a table for the commands Redis users send; keyless if
    the command has none). Commands that would silently see one node only are refused."""
    kind = _kind(command)
    if kind == _DEFAULT:
        return command[1:2]
    if kind == _NONE:
        return ()
    if kind == _SCRIPT:
        numkeys = int(command[2]) if len(command) > 2 else 0
        return command[3 : 3 + numkeys]
    if kind == _STREAMS:
        for i in range(1, len(command)):
            if arg_text(command[i]) == "STREAMS":
                rest = command[i + 1 :]
                return rest[: len(rest) // 2]
        return ()
    if kind == _SUB:
        return command[2:3]
    if kind == _ALL:
        return command[1:]
    if kind == _PAIR:
        return command[1::2]
    if kind == _BPOP:
        return command[1:-1]
    raise rex.RedisClusterException(
        f"{arg_text(command[0])} sees the keys of one Cluster node only: run it on each node of "
        "`await client.primaries()`"
    )


def slot_of(key: Arg) -> int:
    """The Cluster slot of a key (CRC16 of its hash tag), computed by the ``redis`` package."""
    if type(key) is str or type(key) is bytes:
        slot = _SLOT_CACHE.get(key)
        if slot is None:
            if len(_SLOT_CACHE) >= _SLOT_CACHE_SIZE:
                _SLOT_CACHE.clear()
            slot = _SLOT_CACHE[key] = key_slot(_key_bytes(key))
        return slot
    return key_slot(_key_bytes(key))


def command_slot(command: Command) -> int | None:
    """The one slot a command touches, None if keyless; a CROSSSLOT command fails loudly here."""
    if _kind(command) == _DEFAULT:  # the common case: one key, argument 1
        return slot_of(command[1]) if len(command) > 1 else None
    keys = command_keys(command)
    if not keys:
        return None
    slot = slot_of(keys[0])
    for key in keys[1:]:
        other = slot_of(key)
        if other != slot:
            raise rex.ClusterCrossSlotError(
                f"CROSSSLOT {arg_text(command[0])} touches keys in slots {slot} and {other} "
                f"({_key_bytes(keys[0])!r}, {_key_bytes(key)!r}): give them one hash tag"
            )
    return slot


_TRANSACTION = frozenset(
    form
    for name in ("MULTI", "WATCH")
    for form in (name, name.lower(), name.encode(), name.lower().encode())
)


def is_transaction(commands: Sequence[Command]) -> bool:
    for command in commands:
        name = command[0]
        if type(name) is str or type(name) is bytes:
            if name in _TRANSACTION:
                return True
        elif arg_text(name) in ("MULTI", "WATCH"):
            return True
    return False
