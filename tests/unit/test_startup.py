"""Start-up against a Redis that does not answer (nothing listens on port 1): the worker waits,
says so once with the password hidden, and keeps trying; never a line per attempt."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from actorstream._tree.startup import MAX_DELAY, wait_for_redis


async def test_waits_saying_so_once_with_the_password_hidden(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    url = "redis://:hunter2@127.0.0.1:1/0"
    caplog.set_level(logging.INFO, logger="actorstream")
    with trio.move_on_after(10 * MAX_DELAY) as waited:
        await wait_for_redis(url, announce=False)
    assert waited.cancelled_caught  # it never gave up on its own
    lines = [r.getMessage() for r in caplog.records if r.name == "actorstream"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("waiting for Redis at redis://:***@127.0.0.1:1/0 (")
    assert f"at most {MAX_DELAY:g}s apart" in lines[0]
    assert "hunter2" not in caplog.text
