"""One line and one exit code per failure a user can fix, from the exception alone."""

from __future__ import annotations

from redis import exceptions as rex

from actorstream import ConfigError, SupervisorGaveUp
from actorstream._core.exits import classify_exit

URL = "redis://:***@h:6379/0"


def test_lines_and_codes() -> None:
    auth = rex.AuthenticationError(
        "authentication failed for user 'default' at redis://h:6379/0: WRONGPASS invalid")
    found = classify_exit(ExceptionGroup("g", [auth]), URL)
    assert found is not None and found.code == 3 and found.error is auth
    assert found.message == (
        "Redis at redis://:***@h:6379/0 refused the credentials of user 'default': "
        "WRONGPASS invalid")
    db = classify_exit(rex.ResponseError("ERR DB index is out of range"), URL)
    assert db is not None and db.code == 2 and "no such database" in db.message
    down = classify_exit(rex.ConnectionError(
        "cannot connect to redis://h:6379/0: all attempts to connect to h:6379 failed"), URL)
    assert down is not None and down.code == 3
    assert down.message == ("cannot reach Redis at redis://:***@h:6379/0: all attempts to "
                            "connect to h:6379 failed")
    config = classify_exit(ExceptionGroup("g", [ExceptionGroup("h", [ConfigError("bad")])]))
    assert config is not None and (config.message, config.code) == ("bad", 2)
    gave_up = SupervisorGaveUp("partitions", 5, 60)
    found = classify_exit(gave_up)
    assert found is not None and found.code == 1
    assert found.message.startswith("supervisor 'partitions' gave up")
    assert classify_exit(ValueError("a bug")) is None
