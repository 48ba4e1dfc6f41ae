"""``system.redis``: the public client handlers use (commands, pipelines, transactions)."""

from __future__ import annotations

import pytest
from redis import exceptions as rex

from actorstream import Pipeline, RedisClient, System


async def test_commands_pipelines_and_transactions(redis_url: str) -> None:
    system = System("pub", redis_url)
    async with system:
        redis = system.redis
        assert isinstance(redis, RedisClient)
        assert await redis.execute("SET", "{pub}:a", "1") == b"OK"
        assert await redis.execute("INCRBY", "{pub}:a", 41) == 42
        pipe = redis.pipeline().add("INCR", "{pub}:a").add("GET", "{pub}:a")
        assert isinstance(pipe, Pipeline) and len(pipe) == 2
        assert await pipe.execute() == [43, b"43"]
        assert len(pipe) == 0 and pipe.replies == [43, b"43"]
        async with redis.pipeline(transaction=True) as tx:
            tx.add("SET", "{pub}:b", "x").add("RPUSH", "{pub}:l", "y")
        assert tx.replies == [b"OK", 1]
        assert await redis.pipeline().execute() == []


async def test_error_replies(redis_url: str) -> None:
    system = System("puberr", redis_url)
    async with system:
        redis = system.redis
        await redis.execute("SET", "{puberr}:s", "text")
        with pytest.raises(rex.ResponseError, match="WRONGTYPE"):
            await redis.execute("LPUSH", "{puberr}:s", "x")
        pipe = redis.pipeline().add("INCR", "{puberr}:n").add("LPUSH", "{puberr}:s", "x")
        with pytest.raises(rex.ResponseError, match="WRONGTYPE"):
            await pipe.execute()
        assert pipe.replies[0] == 1  # every command ran, as in Redis
        pipe.add("INCR", "{puberr}:n").add("LPUSH", "{puberr}:s", "x")
        replies = await pipe.execute(raise_on_error=False)
        assert replies[0] == 2 and isinstance(replies[1], rex.ResponseError)
        bad = redis.pipeline(transaction=True).add("SET", "{puberr}:t", "1").add("NOSUCHCMD")
        with pytest.raises(rex.ResponseError, match="unknown command"):
            await bad.execute()
        assert await redis.execute("EXISTS", "{puberr}:t") == 0  # EXECABORT: nothing ran
        with pytest.raises(ValueError, match="its name"):
            redis.pipeline().add()
