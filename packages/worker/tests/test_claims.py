"""Claims on a real redis-server: duplicates of a running job acknowledged, handler failures
kept apart from Redis outages."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from jobprogress_core.keys import QUEUE_GROUP
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.pytest_plugin import eventually
from jobprogress_core.queue import JobQueue
from jobprogress_core.store import JobStore
from worker_service.consumer import Consumer, Limits
from worker_service.context import HandlerRegistry, JobContext


async def queued(store: JobStore, **params: object) -> Job:
    job = Job.new("build", {"steps": 1, **params}, owner="o")
    await store.create(job, {"status": "QUEUED"})
    await JobQueue(store.redis, store.keys).enqueue(job.id)
    return job


def consumer(store: JobStore, handlers: HandlerRegistry, name: str, visibility: float = 0.3) -> Consumer:
    limits = Limits(visibility_timeout=visibility, outage_grace=0.5)
    return Consumer(store, store.redis, store.keys, handlers, block_ms=100, limits=limits, name=name)


async def test_handler_failures_are_not_taken_for_redis_outages(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    handlers = HandlerRegistry()
    errors = {
        "redis": ResponseError("WRONGTYPE Operation against a key"),
        "timeout": TimeoutError("upstream slow"),
    }

    @handlers.register("build")
    async def failing(ctx: JobContext) -> str:
        raise errors[ctx.params["kind"]]

    worker = consumer(store, handlers, "w")
    await worker.queue.ensure_group()
    for kind, message in [("redis", "ResponseError: WRONGTYPE"), ("timeout", "TimeoutError: upstream slow")]:
        job = await queued(store, kind=kind)
        reply = await store.redis.xreadgroup(QUEUE_GROUP, "w", {store.keys.queue: ">"}, count=1)
        await worker.process(reply[0][1][0][0], job.id)
        stored = await store.get(job.id)
        assert stored is not None and stored.status is JobStatus.FAILED
        assert stored.error is not None and stored.error.startswith(message)
    assert (await store.redis.xpending(store.keys.queue, QUEUE_GROUP))["pending"] == 0


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
    reply = await store.redis.xreadgroup(QUEUE_GROUP, "w", {store.keys.queue: ">"}, count=2)
    (first, _), (second, _) = reply[0][1]
    running = asyncio.create_task(worker.process(first, job.id))
    await eventually(lambda: runs == 1, "the first entry's run started")  # the job holds its claim
    await worker.process(second, job.id)  # fresh duplicate: acknowledged
    await worker.process(second, job.id, reclaimed=True)  # even when reclaimed: the first run is live
    release.set()
    await running
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.COMPLETED and stored.attempts == 1
    assert runs == 1
    assert (await store.redis.xpending(store.keys.queue, QUEUE_GROUP))["pending"] == 0


async def test_a_requested_cancel_wins_over_the_attempt_limit(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    worker = consumer(store, HandlerRegistry(), "w")
    await worker.queue.ensure_group()
    job = await queued(store)
    await store.append(job.id, EventType.STATUS, {"status": "PROCESSING"}, status="PROCESSING", attempts=3)
    await store.append(job.id, EventType.LOG, {"line": "cancel"}, cancel_requested=1)
    reply = await store.redis.xreadgroup(QUEUE_GROUP, "w", {store.keys.queue: ">"}, count=1)
    await worker.process(reply[0][1][0][0], job.id, reclaimed=True)
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.CANCELLED


async def test_claim_refreshing_survives_redis_refusals(
    jobprogress_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = jobprogress_store
    worker = consumer(store, HandlerRegistry(), "w", visibility=1.0)
    worker.running["1-0"] = ("job", asyncio.create_task(asyncio.sleep(0)))
    await store.redis.delete(store.keys.queue)  # XCLAIM now answers NOGROUP
    # The refresher alone: the job loop would make the group again at once.
    worker.refresher = asyncio.create_task(worker.keep_claims_fresh())

    def refused() -> int:
        return sum("could not refresh" in record.getMessage() for record in caplog.records)

    await eventually(lambda: refused() >= 2, "two refreshes refused")  # it went on after the first
    assert not worker.refresher.done()
    worker.running.clear()
    await worker.stop()
