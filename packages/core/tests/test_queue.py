"""The job queue on a real redis-server: a stale entry found behind fresh ones."""

from __future__ import annotations

from jobprogress_core.keys import QUEUE_GROUP
from jobprogress_core.model import Job
from jobprogress_core.queue import JobQueue
from jobprogress_core.redis import stream_entries
from jobprogress_core.store import JobStore


async def queued(store: JobStore, queue: JobQueue) -> Job:
    job = Job.new("build", {"steps": 1}, owner="o")
    await store.create(job, {"status": "QUEUED"})
    await queue.enqueue(job.id)
    return job


async def test_a_stale_entry_behind_many_fresh_ones_is_found(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys, visibility_timeout=30)
    await queue.ensure_group()
    fresh = [await queued(store, queue) for _ in range(15)]
    await store.redis.xreadgroup(QUEUE_GROUP, "live", {store.keys.queue: ">"}, count=15)
    stale = await queued(store, queue)
    reply = await store.redis.xreadgroup(QUEUE_GROUP, "dead", {store.keys.queue: ">"}, count=1)
    [(_, [(stale_entry, _)])] = stream_entries(reply)
    # As if "dead" had taken it a minute ago and never been heard of since (no waiting: the
    # fresh ones, read a moment ago, are far from the 30 s visibility timeout).
    await store.redis.xclaim(
        store.keys.queue, QUEUE_GROUP, "dead", 0, [stale_entry], idle=60_000, justid=True
    )
    assert len(fresh) == 15

    claimer = JobQueue(store.redis, store.keys, visibility_timeout=30)
    [(_, fields)] = await claimer.reclaim("claimer")
    assert fields["jobId"] == stale.id
    assert await claimer.reclaim("claimer") == []  # the fresh ones stay with the live worker
