"""The XADD a stream builds for an event: its partition's stream key, remembered per key."""

from __future__ import annotations

import uuid

from actorstream import Record, System


class Keyed(Record):
    key: str
    n: int


class IntKeyed(Record):
    key: int
    n: int


def test_the_stream_key_of_a_command_is_the_partition_of_its_event_every_time() -> None:
    system = System("cmd", "redis://127.0.0.1:1/0", install_signal_handlers=False)
    by_str = system.stream("s", record=Keyed, partitions=7, key="key")
    by_int = system.stream("i", record=IntKeyed, partitions=7, key="key")
    by_fn = system.stream("f", record=IntKeyed, partitions=7, key=lambda e: uuid.UUID(int=e.key))
    for _ in range(2):  # the second time from the remembered keys
        for k in range(200):
            for stream, event in ((by_str, Keyed(str(k), k)), (by_int, IntKeyed(k, k)),
                                  (by_fn, IntKeyed(k, k))):
                command = stream._command(event)  # type: ignore[arg-type]
                assert command[:3] == ("XADD", stream.stream_key(stream.partition_of(event)), "*")
                assert list(command[3:]) == stream.format.encode(event)
    # 1 and "1" are one key: one partition
    for k in range(50):
        one = by_str.partition_of(Keyed(str(k), 0))
        assert by_int._command(IntKeyed(k, 0))[1] == by_int.stream_key(one)
