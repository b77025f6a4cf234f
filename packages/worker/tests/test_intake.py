"""How a worker takes entries from the queue shards, on a real redis-server: every shard
served (one slot, sixteen shards, a busy one), an idle worker starting a job at once
whatever its shard, never more jobs than slots (what comes beyond is given back, and runs
once later), stale entries taken over on any shard with their attempts counted, unseen
entries of every shard released on a stop."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from worker_helpers import consumer, consumer_for, enqueue, in_shard, queued, read_group, reader_of

from jobprogress_core.keys import QUEUE_GROUP
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.queue import JobQueue
from jobprogress_core.store import JobStore
from jobprogress_testing import eventually
from worker_service.consumer import Consumer
from worker_service.context import HandlerRegistry, JobContext
from worker_service.simulated import builtin_handlers


class Recorder:
    """Handlers of type ``build`` that note which job started when, and how many ran at once;
    each runs ``seconds``, and not past :attr:`release` while it is clear."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.started: list[str] = []
        self.started_at: dict[str, float] = {}
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.release.set()

    def handlers(self) -> HandlerRegistry:
        handlers = HandlerRegistry()

        @handlers.register("build")
        async def record(ctx: JobContext) -> str:
            self.started.append(ctx.job_id)
            self.started_at[ctx.job_id] = asyncio.get_running_loop().time()
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await asyncio.sleep(self.seconds)
                await self.release.wait()
            finally:
                self.running -= 1
            return "ok"

        return handlers


async def all_done(store: JobStore, jobs: list[Job]) -> bool:
    for job in jobs:
        stored = await store.get(job.id)
        if stored is None or not stored.status.terminal:
            return False
    return True


async def queue_at_once(store: JobStore, shards: list[int]) -> list[Job]:
    """Jobs stored, one in each of ``shards``, then queued in one round trip."""
    jobs = [in_shard(Job.new("build", {"steps": 1}, owner="o"), store.keys, shard) for shard in shards]
    for job in jobs:
        await store.create(job, {"status": "QUEUED"})
    async with store.redis.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.xadd(store.keys.queue_of(job.id), {"jobId": job.id})
        await pipe.execute()
    return jobs


def given_back() -> float:
    return REGISTRY.get_sample_value("jobprogress_queue_entries_given_back_total") or 0.0


async def test_one_slot_serves_every_shard_before_a_busy_one_twice(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    recorder = Recorder()
    busy = [await queued(store, shard=0) for _ in range(20)]
    lone = [await queued(store, shard=shard) for shard in range(1, 16)]
    worker = consumer_for(store, recorder.handlers(), concurrency=1)
    worker.start()
    try:
        await eventually(lambda: len(recorder.started) == 35, "every job started")
    finally:
        await worker.stop()
    assert {store.keys.partition_of(job_id) for job_id in recorder.started[:16]} == set(range(16))
    assert sorted(recorder.started) == sorted(job.id for job in [*busy, *lone])  # each once
    assert recorder.most == 1
    assert await JobQueue(store.redis, store.keys).counts() == (0, 0)


async def test_a_job_arriving_beside_a_busy_shard_is_not_kept_waiting(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    recorder = Recorder(seconds=0.02)
    worker = consumer_for(store, recorder.handlers(), concurrency=1)
    worker.start()
    try:
        busy = [await queued(store, shard=0) for _ in range(30)]
        await eventually(lambda: len(recorder.started) >= 3, "the busy shard's jobs under way")
        lone = await queued(store, shard=9)
        before = len(recorder.started)
        await eventually(lambda: lone.id in recorder.started, "the lone job started")
        assert recorder.started.index(lone.id) - before <= 2  # its turn came at the next round
        await eventually(lambda: all_done(store, [*busy, lone]), "every job done")
    finally:
        await worker.stop()


async def test_an_idle_worker_starts_a_job_at_once_whatever_its_shard(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    recorder = Recorder()
    # A blocking read of 5 s: a job that waited for one to end would be seen to.
    worker = Consumer(store, reader_of(store), store.keys, recorder.handlers(), block_ms=5000)
    worker.start()
    loop = asyncio.get_running_loop()
    latencies = []
    try:
        await asyncio.sleep(0.3)  # idle: a read in flight on every shard
        for shard in (0, 7, 15, 7):
            queued_at = loop.time()
            job = await queued(store, shard=shard)
            await eventually(lambda job=job: job.id in recorder.started_at, "the job started", interval=0.01)
            latencies.append(recorder.started_at[job.id] - queued_at)
    finally:
        await worker.stop()
    assert max(latencies) < 0.25, latencies  # milliseconds here; far from the block time


async def test_entries_beyond_the_free_slots_are_given_back_and_each_job_runs_once(
    jobprogress_store: JobStore,
) -> None:
    store = jobprogress_store
    recorder = Recorder()
    recorder.release.clear()
    # Reads of 5 s: all of them are in flight when the jobs come (none has just timed out).
    worker = Consumer(store, reader_of(store), store.keys, recorder.handlers(), concurrency=1, block_ms=5000)
    worker.start()
    try:
        await asyncio.sleep(0.3)  # idle: a read in flight on every shard
        before = given_back()
        jobs = await queue_at_once(store, [2, 5, 8, 11])  # four reads answer at once, one slot
        await eventually(lambda: given_back() - before == 3, "three entries given back")
        assert recorder.running == 1
        assert await JobQueue(store.redis, store.keys).counts() == (3, 1)
        recorder.release.set()
        await eventually(lambda: all_done(store, jobs), "every job done")
    finally:
        await worker.stop()
    assert sorted(recorder.started) == sorted(job.id for job in jobs) and recorder.most == 1
    for job in jobs:
        stored = await store.get(job.id)
        assert stored is not None and stored.status is JobStatus.COMPLETED and stored.attempts == 1


async def test_two_workers_run_every_job_of_every_shard_once(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    recorder = Recorder(seconds=0.005)
    workers = [consumer_for(store, recorder.handlers(), concurrency=2) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        jobs = await queue_at_once(store, [n % 16 for n in range(32)])  # while both wait on every shard
        jobs += [await queued(store, shard=n % 16) for n in range(32)]  # and while they run
        await eventually(lambda: all_done(store, jobs), "every job done")
    finally:
        for worker in workers:
            await worker.stop()
    assert sorted(recorder.started) == sorted(job.id for job in jobs)  # each once
    assert recorder.most <= 4
    assert await JobQueue(store.redis, store.keys).counts() == (0, 0)


async def abandoned(store: JobStore, shard: int, attempts: int) -> Job:
    """A job on ``shard`` that worker "dead" started (``attempts`` so far) and then left: its
    entry has been idle for a minute."""
    job, _ = await enqueue(store, shard=shard)
    await JobQueue(store.redis, store.keys).ensure_group()
    [entry] = await read_group(store, "dead", job)
    fields = {"status": "PROCESSING", "worker": "dead", "entry": entry.id, "attempts": attempts}
    await store.append(job.id, EventType.STATUS, {"status": "PROCESSING"}, **fields)
    key = store.keys.queue(shard)
    await store.redis.xclaim(key, QUEUE_GROUP, "dead", 0, [entry.id], idle=60_000, justid=True)
    return job


@pytest.mark.parametrize("shard", [0, 6, 15])
async def test_a_stale_entry_on_any_shard_is_taken_over_counting_the_attempt(
    jobprogress_store: JobStore, shard: int
) -> None:
    store = jobprogress_store
    job = await abandoned(store, shard, attempts=1)
    worn = await abandoned(store, (shard + 5) % 16, attempts=3)
    worker = consumer(store, builtin_handlers(), "w")
    worker.start()
    try:
        await eventually(lambda: all_done(store, [job, worn]), "both jobs ended")
    finally:
        await worker.stop()
    done, failed = await store.get(job.id), await store.get(worn.id)
    assert done is not None and done.status is JobStatus.COMPLETED and done.attempts == 2
    messages = [event.data.get("message") for event in await store.events(job.id)]
    assert "Reclaimed by w after dead stopped responding (attempt 2)" in messages
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error == "Gave up after 3 attempts: worker dead stopped responding"


async def test_a_stopping_worker_releases_unseen_entries_of_every_shard(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    worker = consumer(store, HandlerRegistry(), "w", visibility=30)
    await worker.queue.ensure_group()
    jobs = [await queued(store, shard=3), await queued(store, shard=12)]
    for job in jobs:  # Redis gave them to "w", whose replies never arrived
        await read_group(store, "w", job)
    await worker.stop()
    assert await JobQueue(store.redis, store.keys).counts() == (2, 0)
    for job in jobs:
        consumers = await store.redis.xinfo_consumers(store.keys.queue_of(job.id), QUEUE_GROUP)
        assert "w" not in {c["name"] for c in consumers}
