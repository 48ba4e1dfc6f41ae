"""The outage log decision (pure): one line per outage per worker, however many tasks notice."""

from __future__ import annotations

from actorstream._core.outage import OutageLog


def test_first_failure_begins_an_outage_and_the_rest_are_quiet() -> None:
    log = OutageLog()
    assert log.on_answer(0.0) is None  # nothing to end
    assert log.on_failure(1.0) is True
    assert [log.on_failure(t) for t in (1.0, 1.1, 2.5, 9.0)] == [False] * 4  # 16 partitions...
    assert log.active
    assert log.on_answer(4.0) == 3.0
    assert not log.active and log.on_answer(5.0) is None
    assert log.on_failure(6.0) is True  # a new outage is a new line


def test_data_loss_is_logged_once_per_outage_or_quiet_period() -> None:
    log = OutageLog()
    assert log.on_data_loss(0.0) is True  # e.g. an operator's FLUSHALL: no outage seen
    assert log.on_data_loss(1.0) is False
    log.on_failure(2.0)
    log.on_answer(3.0)
    assert log.on_data_loss(3.1) is True  # the restart's loss, seen by the heartbeat
    assert log.on_data_loss(3.2) is False  # the same loss, seen by the epochs
    assert log.on_data_loss(50.0) is False
    assert log.on_data_loss(70.0) is True  # a minute later: news again


def test_an_outage_explains_leases_lapsing_during_and_shortly_after_it() -> None:
    log = OutageLog()
    assert not log.explains(0.0, within=6.0)
    log.on_failure(10.0)
    assert log.explains(30.0, within=6.0)  # still going
    log.on_answer(11.0)
    assert log.explains(15.0, within=6.0)
    assert not log.explains(16.5, within=6.0)
