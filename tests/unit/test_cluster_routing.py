"""The pure parts of Cluster routing: which arguments are keys, slot maps, URL seeds."""

from __future__ import annotations

import pytest
from redis import exceptions as rex

from actorstream._core.errors import ConfigError
from actorstream._transport import ConnectionConfig, UnblockedError, command_slot, reply_error
from actorstream._transport._cluster import command_keys, parse_shards, parse_slots, slot_of


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        (("GET", "a"), ["a"]),
        ((b"xadd", b"s", b"*", b"f", b"v"), [b"s"]),
        (("PING",), []),
        (("SCRIPT", "LOAD", "return 1"), []),
        (("EVALSHA", "abc", 2, "{t}a", "{t}b", "arg"), ["{t}a", "{t}b"]),
        (("EVALSHA", "abc", 0, "arg"), []),
        (("XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "STREAMS", "s1", "s2", ">", ">"),
         ["s1", "s2"]),
        (("xread", "BLOCK", 0, "streams", "s", "$"), ["s"]),
        (("XINFO", "STREAM", "s"), ["s"]),
        (("XGROUP", "CREATE", "s", "g", "$"), ["s"]),
        (("DEL", "a", "b"), ["a", "b"]),
        (("MSET", "a", 1, "b", 2), ["a", "b"]),
        (("BLPOP", "a", "b", 0), ["a", "b"]),
    ],
)
def test_command_keys(command: tuple[object, ...], keys: list[object]) -> None:
    assert list(command_keys(command)) == keys  # type: ignore[arg-type]


def test_command_slot_and_crossslot() -> None:
    assert command_slot(("PING",)) is None
    assert command_slot(("GET", "{x}a")) == slot_of("x")
    assert command_slot(("MGET", "{x}a", "{x}b")) == slot_of("x")
    with pytest.raises(rex.ClusterCrossSlotError, match="CROSSSLOT MGET"):
        command_slot(("MGET", "{x}a", "{y}b"))
    with pytest.raises(rex.RedisClusterException, match="primaries"):
        command_slot(("SCAN", 0))
    assert slot_of(memoryview(b"{x}")) == slot_of("x") == slot_of(b"x")


def _node(port: int, role: str, health: str = "online", ip: str = "10.0.0.1") -> list[object]:
    return [b"id", b"x" * 40, b"port", port, b"ip", ip.encode(), b"endpoint", ip.encode(),
            b"role", role.encode(), b"replication-offset", 1, b"health", health.encode()]


def test_parse_shards_prefers_a_healthy_primary() -> None:
    reply = [
        [b"slots", [0, 99, 200, 299], b"nodes", [_node(7000, "master"), _node(7003, "replica")]],
        [b"slots", [100, 199], b"nodes", [_node(7001, "master", "fail"),
                                          _node(7004, "master")]],
        [b"slots", [], b"nodes", [_node(7005, "master")]],  # no slots: not a primary of ours
    ]
    smap = parse_shards(reply, ("seed", 1), tls=False)
    assert smap.owners[0] == smap.owners[250] == ("10.0.0.1", 7000)
    assert smap.owners[150] == ("10.0.0.1", 7004)
    assert smap.owners[300] is None
    assert smap.primaries == [("10.0.0.1", 7000), ("10.0.0.1", 7004)]
    assert smap.replicas[("10.0.0.1", 7000)] == [("10.0.0.1", 7003)]


def test_parse_shards_tls_port_and_unknown_endpoint() -> None:
    node = [*_node(7000, "master", ip=""), b"tls-port", 7100]
    node[7] = b"?"
    smap = parse_shards([[b"slots", [0, 16383], b"nodes", [node]]], ("seed", 1), tls=True)
    assert smap.owners[5] == ("seed", 7100)


def test_parse_slots_fallback() -> None:
    reply = [[0, 8191, [b"127.0.0.1", 7000, b"id1"], [b"127.0.0.1", 7003, b"id3"]],
             [8192, 16383, [b"", 7001, b"id2"]]]
    smap = parse_slots(reply, ("seed", 1))
    assert smap.owners[0] == ("127.0.0.1", 7000)
    assert smap.owners[16383] == ("seed", 7001)


def test_cluster_nodes_from_the_url() -> None:
    config = ConnectionConfig.from_url("redis://a:7000/0?cluster_nodes=b:7001,[::1]:7002")
    assert config.cluster_nodes == (("b", 7001), ("::1", 7002))
    node = config.for_node("c", 7005)
    assert (node.host, node.port, node.cluster_nodes) == ("c", 7005, ())
    with pytest.raises(ConfigError, match="cluster_nodes"):
        ConnectionConfig.from_url("redis://a:7000/0?cluster_nodes=b")


def test_unblocked_reply() -> None:
    err = reply_error("UNBLOCKED force unblock from blocking operation")
    assert isinstance(err, UnblockedError) and isinstance(err, rex.ResponseError)
    moved = reply_error("MOVED 3999 127.0.0.1:7001")
    assert isinstance(moved, rex.MovedError)
    assert (moved.slot_id, moved.host, moved.port) == (3999, "127.0.0.1", 7001)
