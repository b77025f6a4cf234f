"""The sharded job queue on a real redis-server: a job in its partition's shard, sweeps round
robin that never take more than asked, entries of equal ids on two shards kept apart, a
stale entry found on any shard, counts summed over the shards."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from redis.crc import key_slot

from jobprogress_core.keys import QUEUE_GROUP
from jobprogress_core.model import Job
from jobprogress_core.queue import JobQueue, QueueEntry
from jobprogress_core.store import JobStore


def job_in(store: JobStore, shard: int) -> Job:
    """A new job whose id falls in partition ``shard``."""
    while True:
        job = dataclasses.replace(Job.new("build", {"steps": 1}, owner="o"), id=uuid.uuid4().hex)
        if store.keys.partition_of(job.id) == shard:
            return job


async def queued(store: JobStore, queue: JobQueue, shard: int | None = None) -> Job:
    job = job_in(store, shard) if shard is not None else Job.new("build", {"steps": 1}, owner="o")
    await store.create(job, {"status": "QUEUED"})
    await queue.enqueue(job.id)
    return job


async def make_stale(store: JobStore, entry: QueueEntry) -> None:
    """As if ``entry``'s consumer had taken it a minute ago and never been heard of since."""
    key = store.keys.queue(entry.shard)
    await store.redis.xclaim(key, QUEUE_GROUP, "dead", 0, [entry.id], idle=60_000, justid=True)


async def test_a_job_is_queued_in_its_partitions_shard_and_slot(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys)
    job = Job.new("build", {"steps": 1}, owner="o")
    entry = await queue.enqueue(job.id)
    assert entry.shard == store.keys.partition_of(job.id) and entry.job_id == job.id
    key = store.keys.queue(entry.shard)
    assert key_slot(key.encode()) == key_slot(store.keys.job(job.id).encode())
    assert await store.redis.xlen(key) == 1
    assert sum([await store.redis.xlen(store.keys.queue(shard)) for shard in queue.shards]) == 1


async def test_a_sweep_goes_round_the_shards_and_never_takes_more_than_asked(
    jobprogress_store: JobStore,
) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys)
    await queue.ensure_group()
    busy = [await queued(store, queue, 0) for _ in range(5)]
    lone = [await queued(store, queue, 3), await queued(store, queue, 9)]

    first = await queue.take("w", 2)
    assert [entry.shard for entry in first] == [0, 3]  # one each, not two of the busy shard
    assert [entry.shard for entry in await queue.take("w", 1)] == [9]  # after the shard served last
    rest = await queue.take("w", 100)
    assert [entry.shard for entry in rest] == [0, 0, 0, 0]
    taken = [entry.job_id for entry in [*first, *rest]]
    assert sorted(taken) == sorted(job.id for job in [*busy, lone[0]])
    assert await queue.take("w", 4) == []
    assert await queue.counts() == (0, 7)


async def test_equal_entry_ids_on_two_shards_are_two_entries(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys)
    await queue.ensure_group()
    jobs = [job_in(store, 1), job_in(store, 2)]
    for job in jobs:
        await store.redis.xadd(store.keys.queue_of(job.id), {"jobId": job.id}, id="1700000000000-0")
    one, two = await queue.take("w", 2)
    assert one.id == two.id == "1700000000000-0" and one != two
    await queue.ack(one)
    assert await queue.held_by("w") == [two]  # the other shard's entry of the same id is still held
    await queue.refresh("w", [two])
    moved = await queue.requeue(two)
    assert moved.shard == two.shard and moved.id != two.id and moved.job_id == jobs[1].id
    assert await queue.held_by("w") == []
    assert await queue.counts() == (1, 0)


@pytest.mark.parametrize("shard", [0, 7, 15])
async def test_a_stale_entry_on_any_shard_behind_fresh_ones_is_found(
    jobprogress_store: JobStore, shard: int
) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys, visibility_timeout=30)
    await queue.ensure_group()
    for each in queue.shards:  # fresh entries everywhere, many on the stale one's shard
        for _ in range(15 if each == shard else 1):
            await queued(store, queue, each)
    assert len(await queue.take("live", 100)) == 15 + 15
    stale = await queued(store, queue, shard)
    [entry] = await queue.take("dead", 1)
    await make_stale(store, entry)

    claimer = JobQueue(store.redis, store.keys, visibility_timeout=30)
    assert await claimer.reclaim("claimer") == [QueueEntry(shard, entry.id, stale.id)]
    assert await claimer.reclaim("claimer", 4) == []  # the fresh ones stay with the live worker


async def test_reclaim_takes_no_more_than_asked_and_goes_round_the_shards(
    jobprogress_store: JobStore,
) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys, visibility_timeout=30)
    await queue.ensure_group()
    for shard in (2, 2, 5, 11):
        await queued(store, queue, shard)
    for entry in await queue.take("dead", 4):
        await make_stale(store, entry)
    first = await queue.reclaim("claimer", 2)
    assert [entry.shard for entry in first] == [2, 5]
    assert [entry.shard for entry in await queue.reclaim("claimer", 3)] == [11, 2]
    assert await queue.reclaim("claimer", 3) == []


async def test_counts_are_summed_over_the_shards(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys)
    for shard in (0, 4, 4, 8, 15):
        await queued(store, queue, shard)
    assert await queue.counts() == (5, 0)  # no group yet: nothing is held
    await queue.ensure_group()
    taken = await queue.take("w", 2)
    assert await queue.counts() == (3, 2)
    await queue.ack(taken[0])
    assert await queue.counts() == (3, 1)


async def test_a_shard_that_lost_its_group_gets_it_back(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    queue = JobQueue(store.redis, store.keys)
    await queue.ensure_group()
    await store.redis.delete(store.keys.queue(6))  # its group with it: XREADGROUP says NOGROUP
    job = await queued(store, queue, 1)
    assert [entry.job_id for entry in await queue.take("w", 16)] == [job.id]  # the others answer
    late = await queued(store, queue, 6)
    assert [entry.job_id for entry in await queue.take("w", 16)] == [late.id]
    await store.redis.delete(store.keys.queue(6))
    assert await queue.wait("w", 6, block_ms=10) == []
    assert await store.redis.xinfo_groups(store.keys.queue(6))
