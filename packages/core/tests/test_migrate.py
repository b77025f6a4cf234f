"""The move from the layout before partitions, on a real redis-server: every job's keys under
its partition's names with their entry IDs and TTLs, the old queue's jobs in their shards (a
running one handed back), deadlines in their partitions' sets; a second run moves nothing."""

from __future__ import annotations

from redis.asyncio import Redis

from jobprogress_core.keys import QUEUE_GROUP
from jobprogress_core.migrate import LegacyKeys, Moved, migrate
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.redis import range_entries
from jobprogress_core.store import JobStore


async def old_job(store: JobStore, legacy: LegacyKeys, status: str, **fields: str) -> Job:
    """A job as the version before partitions left it: made with today's store, then
    renamed to the old names."""
    job = Job.new("build", {"steps": 3}, owner="anon:o")
    await store.create(job, {"status": "QUEUED", "message": "queued"})
    await store.append(job.id, EventType.STATUS, {"status": status}, status=status, **fields)
    redis = store.redis
    await redis.rename(store.keys.job(job.id), legacy.job(job.id))
    await redis.rename(store.keys.events(job.id), legacy.events(job.id))
    return job


async def ids(redis: Redis, stream: str) -> list[str]:
    return [entry_id for entry_id, _ in range_entries(await redis.xrange(stream, "-", "+"))]


async def test_a_deployment_moves_to_the_partitioned_layout(jobprogress_store: JobStore) -> None:
    store, redis, keys = jobprogress_store, jobprogress_store.redis, jobprogress_store.keys
    legacy = LegacyKeys(keys.prefix)
    done = await old_job(store, legacy, "COMPLETED")
    await redis.expire(legacy.job(done.id), 5000)
    await redis.expire(legacy.events(done.id), 5000)
    queued = await old_job(store, legacy, "QUEUED")
    running = await old_job(store, legacy, "PROCESSING", worker="worker-gone")
    external = await old_job(store, legacy, "PROCESSING", runner="external")
    await redis.zadd(legacy.report_keys(external.id), {"k1": 1, "k2": 2})
    await redis.zadd(legacy.external_deadlines, {external.id: 1_900_000_000_000})
    # The old queue: the queued job waiting, the running one delivered to a worker that died.
    await redis.xgroup_create(legacy.queue, QUEUE_GROUP, id="0", mkstream=True)
    running_entry = await redis.xadd(legacy.queue, {"jobId": running.id})
    await redis.xreadgroup(QUEUE_GROUP, "worker-gone", {legacy.queue: ">"}, count=1)
    await redis.hset(legacy.job(running.id), "entry", running_entry)
    await redis.xadd(legacy.queue, {"jobId": queued.id})
    await redis.xadd(legacy.queue, {"jobId": done.id})  # ended: not queued again
    before = {job.id: await ids(redis, legacy.events(job.id)) for job in (done, queued, running, external)}

    assert await migrate(redis, keys, dry_run=True) == Moved(jobs=4, queued=2, handed_back=1, deadlines=1)
    assert await redis.exists(legacy.job(done.id), legacy.queue) == 2  # a dry run changes nothing

    assert await migrate(redis, keys) == Moved(jobs=4, queued=2, handed_back=1, deadlines=1)
    for job_id, entry_ids in before.items():
        assert await redis.exists(legacy.job(job_id), legacy.events(job_id)) == 0
        now = await ids(redis, keys.events(job_id))
        assert now[: len(entry_ids)] == entry_ids  # the same IDs: clients resume exactly
    assert 4000 < await redis.ttl(keys.events(done.id)) <= 5000
    assert (await store.get(done.id)).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert await redis.zrange(keys.report_keys(external.id), 0, -1) == ["k1", "k2"]
    assert await store.get(external.id) is not None
    partition = keys.partition_of(external.id)
    assert await redis.zscore(keys.external_deadlines(partition), external.id) == 1_900_000_000_000
    assert await redis.exists(legacy.queue, legacy.external_deadlines) == 0

    # The running job was handed back: queued again, its worker and entry cleared, and said so.
    moved_back = await store.get(running.id)
    assert moved_back is not None and moved_back.status is JobStatus.QUEUED and not moved_back.entry
    last = (await store.events(running.id, before[running.id][-1]))[-1]
    assert last.type is EventType.STATUS and "partitioned" in last.data["message"]
    waiting = {
        fields["jobId"]
        for partition in range(keys.partitions)
        for _, fields in range_entries(await redis.xrange(keys.queue(partition), "-", "+"))
    }
    assert waiting == {queued.id, running.id}

    assert await migrate(redis, keys) == Moved()  # again: nothing left to move
