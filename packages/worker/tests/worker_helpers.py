"""What the worker's tests share: jobs put on the queue, a consumer that takes them, the
queue's pending count. On the path through ``pythonpath`` in the root pyproject.toml (the tests
are imported with ``--import-mode=importlib``, so a test module cannot import its neighbour)."""

from __future__ import annotations

from jobprogress_core.keys import QUEUE_GROUP
from jobprogress_core.model import Job
from jobprogress_core.queue import JobQueue
from jobprogress_core.store import JobStore
from worker_service.consumer import Consumer, Limits
from worker_service.context import HandlerRegistry

__all__ = ["consumer", "consumer_for", "enqueue", "pending", "queued", "take"]


async def enqueue(store: JobStore, job_type: str = "build", **params: object) -> tuple[Job, str]:
    job = Job.new(
        job_type,
        {"steps": 2, "durationSeconds": 0.02, "failAtStep": None, **params},
        owner="o",
        total_steps=2,
    )
    await store.create(job, {"status": "QUEUED"})
    entry = await JobQueue(store.redis, store.keys).enqueue(job.id)
    return job, entry


async def take(consumer: Consumer) -> tuple[str, str]:
    await consumer.queue.ensure_group()
    reply = await consumer.reader.xreadgroup(QUEUE_GROUP, consumer.name, {consumer.keys.queue: ">"}, count=1)
    entry_id, fields = reply[0][1][0]
    return entry_id, fields["jobId"]


async def pending(store: JobStore) -> int:
    info = await store.redis.xpending(store.keys.queue, QUEUE_GROUP)
    return int(info["pending"])


def consumer_for(store: JobStore, handlers: HandlerRegistry) -> Consumer:
    return Consumer(store, store.redis, store.keys, handlers, block_ms=100)


async def queued(store: JobStore, **params: object) -> Job:
    job = Job.new("build", {"steps": 1, **params}, owner="o")
    await store.create(job, {"status": "QUEUED"})
    await JobQueue(store.redis, store.keys).enqueue(job.id)
    return job


def consumer(store: JobStore, handlers: HandlerRegistry, name: str, visibility: float = 0.3) -> Consumer:
    limits = Limits(visibility_timeout=visibility, outage_grace=0.5)
    return Consumer(store, store.redis, store.keys, handlers, block_ms=100, limits=limits, name=name)
