"""``AutoPipeline`` on a real redis-server and on the local cluster: the commands of many
callers in one turn of the loop share a pipeline, each caller gets its own replies, and an
error reply is raised to its own caller alone; scripts go the same way, and one the Redis
does not have is sent again on its own, which loads it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ResponseError

from jobprogress_core.autopipeline import AutoPipeline
from jobprogress_core.redis import close, create_redis
from jobprogress_core.settings import Settings


@pytest.fixture
async def redis(jobprogress_any_settings: Settings) -> AsyncIterator[Any]:
    client: Any = create_redis(jobprogress_any_settings)
    yield client
    await close(client)


async def test_many_callers_get_their_own_replies(redis: Any) -> None:
    batch = AutoPipeline(redis, max_batch=50)
    run = uuid.uuid4().hex[:8]
    keys = [f"autopipeline:{{{n}}}:{run}" for n in range(120)]  # on every master of a cluster
    async with redis.pipeline(transaction=False) as pipe:
        for n, key in enumerate(keys):
            pipe.set(key, f"value {n}")
        pipe.set(f"autopipeline:{{0}}:{run}:list", "not a hash")
        await pipe.execute()

    async def read(n: int, key: str) -> None:
        replies = await batch.call(lambda pipe: (pipe.get(key), pipe.strlen(key)))
        assert replies == [f"value {n}", len(f"value {n}")]

    async def wrong_type() -> None:
        with pytest.raises(ResponseError):
            await batch.call(lambda pipe: pipe.hgetall(f"autopipeline:{{0}}:{run}:list"))

    # All asked for in the same turn: three pipelines of at most 50 callers, one failing.
    await asyncio.gather(*(read(n, key) for n, key in enumerate(keys)), wrong_type())
    async with redis.pipeline(transaction=False) as pipe:
        for key in [*keys, f"autopipeline:{{0}}:{run}:list"]:
            pipe.delete(key)
        await pipe.execute()


async def test_scripts_run_together_and_load_when_missing(redis: Any) -> None:
    batch = AutoPipeline(redis)
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    run = uuid.uuid4().hex[:8]
    keys = [f"autopipeline:{{{n}}}:{run}:count" for n in range(30)]

    async def add(key: str, amount: int) -> int:
        return int(await batch.run_script(script, [key], [amount]))

    # Never loaded yet: every one of them is refused in the pipeline, then sent on its own.
    assert await asyncio.gather(*(add(key, n) for n, key in enumerate(keys))) == list(range(30))
    # Loaded now (where the fallback ran): the same scripts, all in the pipeline.
    assert await asyncio.gather(*(add(key, 1) for key in keys)) == list(range(1, 31))
    await redis.script_flush()  # a restart, as far as the scripts go
    assert await asyncio.gather(*(add(key, 1) for key in keys)) == list(range(2, 32))
    for key in keys:
        await redis.delete(key)
