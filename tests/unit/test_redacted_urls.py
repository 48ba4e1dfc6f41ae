"""Printed URLs (start-up lines, CLI errors, top) never show a password, anywhere in them."""

from actorstream._transport import redact_url as shown


def test_shown_masks_every_password() -> None:
    assert shown("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert shown("rediss://app:hunter2@h:6380/1") == "rediss://app:***@h:6380/1"
    masked = shown("unix:///run/redis.sock?db=0&password=hunter2&ssl_password=x2")
    assert "hunter2" not in masked and "x2" not in masked
    assert masked == "unix:///run/redis.sock?db=0&password=***&ssl_password=***"
    assert shown("redis://h:6379/0") == "redis://h:6379/0"
