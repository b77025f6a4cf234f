"""Runs of jobs on a real redis-server: the handler API, how a handler's end is recorded,
handler failures kept apart from Redis outages, an end that another one beat."""

from __future__ import annotations

from prometheus_client import REGISTRY
from redis.exceptions import ResponseError
from worker_helpers import consumer, consumer_for, enqueue, pending, queued, read_group, take

from jobprogress_core.model import EventType, JobStatus
from jobprogress_core.store import JobStore
from worker_service.context import HandlerRegistry, JobContext, JobError
from worker_service.simulated import builtin_handlers


async def test_handler_api_and_failures(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    handlers = HandlerRegistry()

    @handlers.register("build")
    async def checked(ctx: JobContext) -> str:
        await ctx.log("working", level="warning")
        await ctx.progress(1, 3, "a third")
        raise JobError("disk full")

    @handlers.register("report")
    async def broken(ctx: JobContext) -> str:
        raise KeyError("oops")

    consumer = consumer_for(store, handlers)
    for job_type, error in [("build", "disk full"), ("report", "KeyError: 'oops'"), ("import", "No handler")]:
        job, _ = await enqueue(store, job_type)
        await consumer.process(await take(consumer))
        stored = await store.get(job.id)
        assert stored is not None and stored.status is JobStatus.FAILED
        assert stored.error is not None and error in stored.error
        last = (await store.events(job.id))[-1]
        assert last.type is EventType.FAILED and last.data["error"] == stored.error
    assert await pending(store) == 0
    assert handlers.types() == ["build", "report"]


async def test_failing_at_a_step_reports_progress_so_far(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    consumer = consumer_for(store, builtin_handlers())
    job, _ = await enqueue(store, "report", steps=2, failAtStep=2)
    await consumer.process(await take(consumer))
    events = await store.events(job.id)
    assert events[-1].type is EventType.FAILED
    assert events[-1].data == {**events[-1].data, "progress": 50, "error": "Step 2/2 (Aggregate) failed"}


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
        [entry] = await read_group(store, "w", job)
        await worker.process(entry)
        stored = await store.get(job.id)
        assert stored is not None and stored.status is JobStatus.FAILED
        assert stored.error is not None and stored.error.startswith(message)
    assert await pending(store) == 0


async def test_a_job_that_ended_meanwhile_is_counted_once(jobprogress_store: JobStore) -> None:
    """Cancelled (by job-queue-service, which counts it) while its handler returned: the
    worker's completion is not recorded, nor counted as a second end."""
    store = jobprogress_store
    handlers = HandlerRegistry()

    @handlers.register("race")
    async def race(context: JobContext) -> str:
        await store.finish(context.job_id, EventType.CANCELLED)  # lands before the handler's end
        return "done"

    consumer = consumer_for(store, handlers)
    await enqueue(store, "race")
    entry = await take(consumer)
    labels = {"type": "race", "status": "completed"}

    def counted() -> tuple[float | None, float | None]:
        return (
            REGISTRY.get_sample_value("jobprogress_jobs_finished_total", labels),
            REGISTRY.get_sample_value("jobprogress_job_duration_seconds_count", labels),
        )

    before = counted()
    await consumer.process(entry)

    job = await store.get(entry.job_id)
    assert job is not None and job.status is JobStatus.CANCELLED
    assert counted() == before
    assert await pending(store) == 0
