"""What the worker's tests share: jobs put on the queue, a consumer that takes them, the
queue's pending count. On the path through ``pythonpath`` in the root pyproject.toml (the tests
are imported with ``--import-mode=importlib``, so a test module cannot import its neighbour)."""

from __future__ import annotations

import dataclasses
import uuid

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from jobprogress_core.keys import QUEUE_GROUP, Keys
from jobprogress_core.model import Job
from jobprogress_core.queue import JobQueue, QueueEntry
from jobprogress_core.redis import stream_entries
from jobprogress_core.store import JobStore
from worker_service.consumer import Consumer, Limits
from worker_service.context import HandlerRegistry

__all__ = [
    "consumer", "consumer_for", "enqueue", "in_shard", "pending", "queued", "read_group", "reader_of", "take",
]  # fmt: skip


def in_shard(job: Job, keys: Keys, shard: int | None) -> Job:
    """``job`` with an id of partition ``shard`` (queued in that shard), or as it is."""
    while shard is not None and keys.partition_of(job.id) != shard:
        job = dataclasses.replace(job, id=uuid.uuid4().hex)
    return job


async def enqueue(
    store: JobStore, job_type: str = "build", *, shard: int | None = None, **params: object
) -> tuple[Job, QueueEntry]:
    job = Job.new(
        job_type,
        {"steps": 2, "durationSeconds": 0.02, "failAtStep": None, **params},
        owner="o",
        total_steps=2,
    )
    job = in_shard(job, store.keys, shard)
    await store.create(job, {"status": "QUEUED"})
    entry = await JobQueue(store.redis, store.keys).enqueue(job.id)
    return job, entry


async def take(consumer: Consumer) -> QueueEntry:
    """The one new entry on the queue, now ``consumer``'s (without running it)."""
    await consumer.queue.ensure_group()
    [entry] = await consumer.queue.take(consumer.name, 1)
    return entry


async def read_group(store: JobStore, consumer: str, job: Job, count: int = 1) -> list[QueueEntry]:
    """``XREADGROUP`` on the shard of ``job``, by hand, as ``consumer``."""
    shard = store.keys.partition_of(job.id)
    reply = await store.redis.xreadgroup(QUEUE_GROUP, consumer, {store.keys.queue(shard): ">"}, count=count)
    return [
        QueueEntry(shard, i, fields["jobId"]) for _, entries in stream_entries(reply) for i, fields in entries
    ]


async def pending(store: JobStore) -> int:
    """Entries delivered and not acknowledged, on every shard."""
    _, held = await JobQueue(store.redis, store.keys).counts()
    return held


def reader_of(store: JobStore) -> Redis:
    """A client of its own for a consumer's blocking reads, on the store's Redis, as
    worker-service gives its consumer: a connection for each shard, a socket timeout above
    any block time of these tests, and no retries (a read whose connection a stopping
    consumer closes must end, not start again)."""
    pool = store.redis.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), "socket_timeout": 30.0}
    return Redis.from_pool(
        BlockingConnectionPool(
            connection_class=pool.connection_class, max_connections=store.keys.partitions, **kwargs
        )
    )


def consumer_for(store: JobStore, handlers: HandlerRegistry, *, concurrency: int = 4) -> Consumer:
    return Consumer(store, reader_of(store), store.keys, handlers, block_ms=100, concurrency=concurrency)


async def queued(store: JobStore, *, shard: int | None = None, **params: object) -> Job:
    job = in_shard(Job.new("build", {"steps": 1, **params}, owner="o"), store.keys, shard)
    await store.create(job, {"status": "QUEUED"})
    await JobQueue(store.redis, store.keys).enqueue(job.id)
    return job


def consumer(store: JobStore, handlers: HandlerRegistry, name: str, visibility: float = 0.3) -> Consumer:
    limits = Limits(visibility_timeout=visibility, outage_grace=0.5)
    return Consumer(store, reader_of(store), store.keys, handlers, block_ms=100, limits=limits, name=name)
