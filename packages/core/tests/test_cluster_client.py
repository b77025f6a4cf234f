"""The client ``create_redis`` makes for a ``redis+cluster://`` URL, on the testing package's
local cluster: it learns the cluster from its startup nodes, and a burst of commands far
past the pool's size waits for turns instead of failing (redis-py's cluster pool raises
``MaxConnectionsError`` at once), keeping the connections per node within the bound."""

from __future__ import annotations

import asyncio
import os

from redis.asyncio import Redis

from jobprogress_core.redis import WaitingCluster, close, create_redis
from jobprogress_core.settings import Settings
from jobprogress_testing import TEST_ENV
from jobprogress_testing import RedisCluster as LocalCluster

POOL = 4


async def test_a_burst_of_commands_waits_for_turns(jobprogress_redis_cluster: LocalCluster) -> None:
    environ = {
        **TEST_ENV,
        "REDIS_URL": jobprogress_redis_cluster.url,
        "JOBPROGRESS_REDIS_POOL_SIZE": str(POOL),
    }
    settings = Settings.from_env("job-queue-service", environ)
    redis = create_redis(settings, role="burst")
    assert isinstance(redis, WaitingCluster)
    try:
        keys = [f"burst:{{{n}}}:{os.getpid()}" for n in range(40)]  # keys on every master
        replies = await asyncio.gather(*(redis.incr(key) for key in keys for _ in range(10)))
        assert sorted(replies) == sorted(list(range(1, 11)) * 40)
        for node in jobprogress_redis_cluster.masters():
            admin = Redis(port=node.port, decode_responses=True)
            named = [c for c in await admin.client_list() if c["name"].endswith(":burst")]
            await admin.aclose()
            # The turns, and the connection that asked a startup node for the slot map.
            assert len(named) <= POOL + 1, (node.address, len(named))
        await redis.delete(*keys)
    finally:
        await close(redis)


async def test_a_burst_of_pipelines_beside_commands_waits_for_turns(
    jobprogress_redis_cluster: LocalCluster,
) -> None:
    """Pipelines hold a connection on each node they send to: a burst of them, beside a
    burst of commands, waits for turns of its own rather than failing past the pools."""
    environ = {
        **TEST_ENV,
        "REDIS_URL": jobprogress_redis_cluster.url,
        "JOBPROGRESS_REDIS_POOL_SIZE": str(POOL),
    }
    redis = create_redis(Settings.from_env("job-queue-service", environ), role="pipelines")
    keys = [f"pipelines:{{{n}}}:{os.getpid()}" for n in range(12)]  # keys on every master

    async def pipelined() -> list[int]:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(key)
            return await pipe.execute()

    try:
        replies = await asyncio.gather(
            *(pipelined() for _ in range(60)), *(redis.incr(key) for key in keys for _ in range(5))
        )
        assert [int(await redis.get(key)) for key in keys] == [65] * len(keys)
        assert len(replies) == 60 + 5 * len(keys)
        await redis.delete(*keys)
    finally:
        await close(redis)
