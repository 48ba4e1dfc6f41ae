"""The XADD a stream builds for an event: its partition's stream key, remembered per key."""

from __future__ import annotations

import uuid

from actorstream import Record, System, _codecs


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


class Amount(Record):
    key: str
    amount: float
    note: str = ""


def test_an_output_held_in_resp_is_exactly_what_its_command_packs_to() -> None:
    """``_resp`` (exactly-once outputs on one Redis) packs the payload after a remembered head:
    byte for byte the RESP of ``_command``, for every format and kind of key."""
    from actorstream._transport import pack

    system = System("resp", "redis://127.0.0.1:1/0", install_signal_handlers=False)
    streams = [
        (system.stream("s", record=Keyed, partitions=7, key="key"), lambda k: Keyed(str(k), k)),
        (system.stream("one", record=Keyed, partitions=1, key="key"), lambda k: Keyed(str(k), k)),
        (system.stream("i", record=IntKeyed, partitions=5, key="key"), lambda k: IntKeyed(k, k)),
        (system.stream("f", record=IntKeyed, partitions=3, key=lambda e: uuid.UUID(int=e.key)),
         lambda k: IntKeyed(k, -k)),
        (system.stream("z", record=Amount, partitions=4, key="key", compression="zlib"),
         lambda k: Amount(str(k), k / 3, "é" * k)),
        (system.stream("big", record=Amount, partitions=4, key="key"),
         lambda k: Amount(str(k), k * 1e300, "x")),
    ]
    if "msgpack" in _codecs._codecs:  # the fast extra: a codec other than orjson's JSON
        streams.append((system.stream("m", record=Amount, partitions=4, key="key",
                                      codec="msgpack"), lambda k: Amount(str(k), k / 7, "y")))
    for _ in range(2):  # the second time from the remembered heads
        for stream, make in streams:
            for k in range(60):
                event = make(k)
                assert stream._resp(event) == pack(stream._command(event)), (stream, k)


def test_an_output_held_in_resp_is_refused_as_its_command_is() -> None:
    import pytest

    system = System("resp", "redis://127.0.0.1:1/0", install_signal_handlers=False)
    stream = system.stream("s", record=Amount, partitions=3, key="key", max_payload_bytes=64)
    bad = [Keyed("a", 1), Amount("a", float("nan")), Amount("a", 1.0, "x" * 100),
           Amount("a", "1.0")]  # type: ignore[arg-type]
    for event in bad:
        with pytest.raises((TypeError, ValueError)) as held:
            stream._resp(event)  # type: ignore[arg-type]
        with pytest.raises((TypeError, ValueError)) as sent:
            stream._command(event)  # type: ignore[arg-type]
        assert (type(held.value), str(held.value)) == (type(sent.value), str(sent.value))
