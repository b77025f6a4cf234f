"""The consumer on a real redis-server: runs jobs, acknowledges only when finished (and
duplicates of a running job at once), keeps its claims through Redis refusals, leaves the
group when it stops."""

from __future__ import annotations

import asyncio

import pytest
from worker_helpers import consumer, consumer_for, enqueue, pending, queued, read_group, take

from jobprogress_core.keys import QUEUE_GROUP
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.store import JobStore
from jobprogress_testing import eventually
from worker_service.context import HandlerRegistry, JobContext
from worker_service.simulated import builtin_handlers


async def test_runs_a_job_to_completion_and_acknowledges(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    consumer = consumer_for(store, builtin_handlers())
    job, _ = await enqueue(store)
    entry = await take(consumer)
    assert await pending(store) == 1
    await consumer.process(entry)
    assert await pending(store) == 0
    events = await store.events(job.id)
    assert [e.type for e in events] == [
        EventType.STATUS,
        EventType.STATUS,
        EventType.STEP,
        EventType.LOG,
        EventType.LOG,
        EventType.STEP,
        EventType.PROGRESS,
        EventType.STEP,
        EventType.LOG,
        EventType.LOG,
        EventType.STEP,
        EventType.PROGRESS,
        EventType.COMPLETE,
    ]
    steps = [(e.data["stepId"], e.data["status"]) for e in events if e.type is EventType.STEP]
    assert steps == [("checkout", "running"), ("checkout", "completed"), ("install-dependencies", "running"),
                     ("install-dependencies", "completed")]  # fmt: skip
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.status is JobStatus.COMPLETED and stored.attempts == 1 and stored.worker == consumer.name
    assert stored.result == "Build succeeded: all 2 steps passed"


async def test_a_finished_job_is_acknowledged_without_running_again(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    consumer = consumer_for(store, builtin_handlers())
    job, _ = await enqueue(store)
    await store.append(job.id, EventType.COMPLETE, {"status": "COMPLETED"}, status="COMPLETED")
    entry = await take(consumer)
    before = await store.events(job.id)
    await consumer.process(entry)
    assert await store.events(job.id) == before
    assert await pending(store) == 0


async def test_duplicate_entries_of_a_running_job_are_acknowledged(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    handlers = HandlerRegistry()
    runs = 0
    release = asyncio.Event()

    @handlers.register("build")
    async def slow(ctx: JobContext) -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        await ctx.progress(1, 1, "done")
        return "ok"

    worker = consumer(store, handlers, "w", visibility=30)
    await worker.queue.ensure_group()
    job = await queued(store)
    await worker.queue.enqueue(job.id)  # a duplicate, as a retried XADD would make
    first, second = await read_group(store, "w", job, count=2)
    running = asyncio.create_task(worker.process(first))
    await eventually(lambda: runs == 1, "the first entry's run started")  # the job holds its claim
    await worker.process(second)  # fresh duplicate: acknowledged
    await worker.process(second, reclaimed=True)  # even when reclaimed: the first run is live
    release.set()
    await running
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.COMPLETED and stored.attempts == 1
    assert runs == 1
    assert await pending(store) == 0


async def test_a_requested_cancel_wins_over_the_attempt_limit(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    worker = consumer(store, HandlerRegistry(), "w")
    await worker.queue.ensure_group()
    job = await queued(store)
    await store.append(job.id, EventType.STATUS, {"status": "PROCESSING"}, status="PROCESSING", attempts=3)
    await store.append(job.id, EventType.LOG, {"line": "cancel"}, cancel_requested=1)
    [entry] = await read_group(store, "w", job)
    await worker.process(entry, reclaimed=True)
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.CANCELLED


async def test_the_loop_survives_redis_refusing_and_then_takes_jobs(
    jobprogress_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = jobprogress_store
    handlers = HandlerRegistry()

    @handlers.register("build")
    async def quick(ctx: JobContext) -> str:
        return "ok"

    consumer = consumer_for(store, handlers)
    consumer.start()
    try:
        await store.redis.execute_command("REPLICAOF", "127.0.0.1", "1")  # writes now fail: READONLY
        await eventually(
            lambda: any("queue read failed" in r.getMessage() for r in caplog.records), "a refused read"
        )
        assert consumer.alive
    finally:
        await store.redis.execute_command("REPLICAOF", "NO", "ONE")
    job, _ = await enqueue(store)

    async def completed() -> Job | None:
        stored = await store.get(job.id)
        return stored if stored is not None and stored.status is JobStatus.COMPLETED else None

    stored = await eventually(completed, "the job run once Redis takes writes again", timeout=5)
    assert stored is not None and stored.result == "ok"
    await consumer.stop()
    assert not consumer.alive


async def test_claim_refreshing_survives_redis_refusals(
    jobprogress_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = jobprogress_store
    worker = consumer(store, HandlerRegistry(), "w", visibility=1.0)
    job = await queued(store)
    await worker.queue.ensure_group()
    [entry] = await read_group(store, "w", job)
    worker.running[entry] = asyncio.create_task(asyncio.sleep(0))
    await store.redis.delete(store.keys.queue_of(job.id))  # XCLAIM now answers NOGROUP
    # The refresher alone: the job loop would make the group again at once.
    worker.refresher = asyncio.create_task(worker.keep_claims_fresh())

    def refused() -> int:
        return sum("could not refresh" in record.getMessage() for record in caplog.records)

    await eventually(lambda: refused() >= 2, "two refreshes refused")  # it went on after the first
    assert not worker.refresher.done()
    worker.running.clear()
    await worker.stop()


async def test_dead_consumers_are_forgotten_and_a_stopping_worker_leaves(
    jobprogress_store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = jobprogress_store
    consumer = consumer_for(store, builtin_handlers())
    await consumer.queue.ensure_group()
    held, _ = await enqueue(store)
    await read_group(store, "gone-holding", held)
    await store.redis.xgroup_createconsumer(store.keys.queue_of(held.id), QUEUE_GROUP, "gone-idle")
    monkeypatch.setattr("jobprogress_core.queue_shards.DEAD_CONSUMER_IDLE_MS", -1)
    assert await consumer.queue.forget_dead_consumers(consumer.name) == 1

    async def consumer_names(job: Job) -> set[str]:
        """The consumers in the group of the job's shard."""
        return {
            c["name"] for c in await store.redis.xinfo_consumers(store.keys.queue_of(job.id), QUEUE_GROUP)
        }

    assert await consumer_names(held) == {"gone-holding"}  # still holds an entry: kept for reclaiming

    consumer.start()
    job, _ = await enqueue(store)  # delivered to the consumer: a member of its shard's group from then on

    async def joined_and_done() -> bool:
        stored = await store.get(job.id)
        return consumer.name in await consumer_names(job) and stored is not None and stored.status.terminal

    await eventually(joined_and_done, "the consumer in the group, its job done")
    await consumer.stop()
    assert consumer.name not in await consumer_names(job)


async def test_liveness_says_whether_the_job_loop_turns(jobprogress_store: JobStore) -> None:
    """What Consul's TTL check on the loop is fed: live while it turns or waits for a slot,
    not when it has stopped turning, not when it has died."""
    store = jobprogress_store
    consumer = consumer_for(store, builtin_handlers(), concurrency=2)
    consumer.start()
    try:
        await asyncio.sleep(0.3)
        assert consumer.liveness() == (True, "0 of 2 slots busy")
        consumer.turned_at -= 100  # as if it had not turned for 100 s (no await: it cannot turn)
        consumer.waiting_for_slot = False
        live, note = consumer.liveness()
        assert not live and note == "the job loop has not turned for 100s"
        consumer.waiting_for_slot = True  # every slot taken by a running job: waiting, not stuck
        assert consumer.liveness() == (True, "all 2 slots busy")
    finally:
        await consumer.stop()
    assert consumer.liveness() == (False, "the job loop has stopped")
