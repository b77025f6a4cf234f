"""The consumer-group loop: take jobs from the queue stream, run them, acknowledge them.

Delivery is at-least-once: an entry is acknowledged only once its job has reached a
terminal state, so the entry of a job whose worker dies stays pending in the group. A job
that is not waiting to run (finished, gone, or a duplicate entry of a job another worker
runs) is acknowledged without running it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from jobprogress_core.keys import QUEUE_GROUP, Keys
from jobprogress_core.model import EventType, JobStatus, now_iso
from jobprogress_core.redis import stop_reader, stream_entries
from jobprogress_core.store import JobStore

from .context import HandlerRegistry, JobContext, JobError

logger = logging.getLogger(__name__)


def consumer_name() -> str:
    return f"worker-{socket.gethostname().split('.')[0]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s ended by an error", task.get_name(), exc_info=task.exception())


class Consumer:
    def __init__(
        self,
        store: JobStore,
        reader: Redis,
        keys: Keys,
        handlers: HandlerRegistry,
        *,
        concurrency: int = 4,
        block_ms: int = 5000,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.reader = reader
        self.keys = keys
        self.handlers = handlers
        self.concurrency = concurrency
        self.block_ms = block_ms
        self.name = name or consumer_name()
        self.running: set[asyncio.Task[None]] = set()
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.reading = False

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="worker-consumer")
        self.task.add_done_callback(_log_crash)

    async def ensure_group(self) -> None:
        try:
            await self.store.redis.xgroup_create(self.keys.queue, QUEUE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Take jobs while there are free slots; back off while Redis is away or refuses."""
        slots = asyncio.Semaphore(self.concurrency)
        backoff = 0.1
        group_ready = False
        while not self.stopping:
            await slots.acquire()
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                self.reading = True
                reply = await self.reader.xreadgroup(
                    QUEUE_GROUP, self.name, {self.keys.queue: ">"}, count=1, block=self.block_ms
                )
                backoff = 0.1
            except RedisError as exc:
                slots.release()
                if self.stopping:
                    return
                if "NOGROUP" in str(exc):
                    group_ready = False  # the queue was deleted: create the group again
                logger.warning("queue read failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            finally:
                self.reading = False
            entries = [entry for _, stream in stream_entries(reply) for entry in stream]
            if not entries:
                slots.release()
                continue
            for entry_id, fields in entries:
                task = asyncio.create_task(self.process(entry_id, fields.get("jobId", "")))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
                task.add_done_callback(lambda _: slots.release())
                task.add_done_callback(_log_crash)

    async def process(self, entry_id: str, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            state = job.status.value if job else "gone"
            logger.info("queue entry %s: job %s is %s; acknowledging", entry_id, job_id, state)
            await self.ack(entry_id)
            return
        message = f"Started by {self.name}"
        started = await self.store.append(
            job.id,
            EventType.STATUS,
            {"status": JobStatus.PROCESSING.value, "message": message, "worker": self.name},
            status=JobStatus.PROCESSING.value,
            message=message,
            started_at=now_iso(),
            worker=self.name,
            attempts=job.attempts + 1,
        )
        if started is None:
            await self.ack(entry_id)
            return
        logger.info("job %s started (type %s, attempt %d)", job.id, job.type, job.attempts + 1)
        handler = self.handlers.get(job.type)
        try:
            if handler is None:
                raise JobError(f"No handler for job type {job.type!r}")
            result = await handler(JobContext(self.store, job))
        except JobError as exc:
            await self.store.finish(job.id, EventType.FAILED, error=str(exc))
            logger.info("job %s failed: %s", job.id, exc)
        except asyncio.CancelledError:
            logger.warning("job %s interrupted; its queue entry stays pending", job.id)
            raise
        except RedisError:
            raise  # the job cannot be reported now; its queue entry stays pending
        except Exception as exc:
            logger.exception("job %s: handler raised", job.id)
            await self.store.finish(job.id, EventType.FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            await self.store.finish(job.id, EventType.COMPLETE, result=result)
            logger.info("job %s completed", job.id)
        await self.ack(entry_id)

    async def ack(self, entry_id: str) -> None:
        await self.store.redis.xack(self.keys.queue, QUEUE_GROUP, entry_id)

    async def stop(self) -> None:
        """Stop taking jobs, then cancel running ones: their entries stay pending."""
        self.stopping = True
        if self.task is not None:
            if not self.reading:
                self.task.cancel()  # waiting for a free slot or backing off: safe to cancel
            await stop_reader(self.task, self.reader)
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
