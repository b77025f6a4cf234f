"""The sharded queue and the worker on a real Redis Cluster: every command names one slot
(no CROSSSLOT), jobs of every shard are taken once each, a stale entry is taken over.

On the testing package's local cluster (``jobprogress_redis_cluster``: three masters, three
replicas); the keys get a prefix of their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from worker_helpers import in_shard

from jobprogress_core.keys import QUEUE_GROUP, Keys
from jobprogress_core.model import Job, JobStatus
from jobprogress_core.queue import JobQueue
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import TEST_ENV, RedisCluster, eventually
from worker_service.consumer import Consumer
from worker_service.context import HandlerRegistry, JobContext


@pytest.fixture
def settings(jobprogress_redis_cluster: RedisCluster) -> Settings:
    prefix = f"test{uuid.uuid4().hex[:8]}:"
    environ = {**TEST_ENV, "REDIS_URL": jobprogress_redis_cluster.url, "JOBPROGRESS_KEY_PREFIX": prefix}
    return Settings.from_env("worker-service", environ)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    redis = create_redis(settings)
    yield JobStore(redis, Keys(settings.key_prefix, settings.partitions))
    keys = [key async for key in redis.scan_iter(match=f"{settings.key_prefix}*")]  # on every node
    for key in keys:  # one at a time: each in a slot of its own
        await redis.delete(key)
    await redis.aclose()


async def queued(store: JobStore, shards: list[int]) -> list[Job]:
    jobs = [in_shard(Job.new("build", {"steps": 1}, owner="o"), store.keys, shard) for shard in shards]
    queue = JobQueue(store.redis, store.keys)
    for job in jobs:
        await store.create(job, {"status": "QUEUED"})
        await queue.enqueue(job.id)
    return jobs


async def test_every_queue_command_on_a_cluster(store: JobStore) -> None:
    queue = JobQueue(store.redis, store.keys, visibility_timeout=30)
    await queue.ensure_group()
    jobs = await queued(store, [n % 16 for n in range(40)])
    assert await queue.counts() == (40, 0)
    assert await queue.with_new_entries(list(queue.shards)) == set(queue.shards)
    first = await queue.take("w", 3)
    assert [entry.shard for entry in first] == [0, 1, 2]
    taken = first + await queue.take("w", 100)
    assert sorted(entry.job_id for entry in taken) == sorted(job.id for job in jobs)
    assert await queue.counts() == (0, 40)
    await queue.refresh("w", taken)
    assert len(await queue.held_by("w")) == 40
    await queue.ack(taken[0])
    again = await queue.requeue(taken[1])
    assert await queue.wait("other", again.shard, block_ms=50) == [again]
    stale = taken[2]
    key = store.keys.queue(stale.shard)
    await store.redis.xclaim(key, QUEUE_GROUP, "dead", 0, [stale.id], idle=60_000, justid=True)
    assert await queue.reclaim("claimer", 4) == [stale]
    assert await queue.forget_dead_consumers("w") == 0
    await queue.leave("w")
    assert await queue.counts() == (0, 39)


async def test_a_worker_on_a_cluster_takes_every_shards_jobs_once(
    store: JobStore, settings: Settings
) -> None:
    started: list[str] = []
    handlers = HandlerRegistry()

    @handlers.register("build")
    async def quick(ctx: JobContext) -> str:
        started.append(ctx.job_id)
        await asyncio.sleep(0.01)
        return "ok"

    reader = create_redis(settings, block_ms=5000, max_connections=settings.partitions, role="queue-reader")
    worker = Consumer(store, reader, store.keys, handlers, concurrency=2, block_ms=5000)
    worker.start()
    try:
        await asyncio.sleep(0.3)  # idle: a read in flight on every shard
        loop = asyncio.get_running_loop()
        queued_at = loop.time()
        [lone] = await queued(store, [11])
        await eventually(lambda: lone.id in started, "the lone job started", interval=0.01)
        assert loop.time() - queued_at < 0.5  # at once, not after a blocking read's 5 s
        jobs = await queued(store, [n % 16 for n in range(48)])

        async def all_done() -> bool:
            states = [await store.get(job.id) for job in jobs]
            return all(s is not None and s.status is JobStatus.COMPLETED for s in states)

        await eventually(all_done, "every job completed")
    finally:
        await worker.stop()
    assert sorted(started) == sorted(job.id for job in [lone, *jobs])  # each once
    assert await JobQueue(store.redis, store.keys).counts() == (0, 0)
