"""The consumer-group loop: take jobs from the queue stream, run them, acknowledge them.

Delivery is at-least-once: an entry is acknowledged only once its job has reached a
terminal state, so a job whose worker dies stays pending in the group for another
worker to reclaim. A job already finished is acknowledged without running it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from jobprogress_core.keys import QUEUE_GROUP, Keys
from jobprogress_core.model import EventType, JobStatus, now_iso
from jobprogress_core.redis import REDIS_ERRORS, stop_reader, stream_entries
from jobprogress_core.store import JobStore

from .context import HandlerRegistry, JobContext, JobError

logger = logging.getLogger(__name__)


def consumer_name() -> str:
    return f"worker-{socket.gethostname().split('.')[0]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
        self.stopping = False

    async def ensure_group(self) -> None:
        try:
            await self.store.redis.xgroup_create(self.keys.queue, QUEUE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Take jobs while there are free slots; back off while Redis is away."""
        slots = asyncio.Semaphore(self.concurrency)
        backoff = 0.1
        group_ready = False
        while not self.stopping:
            await slots.acquire()
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                reply = await self.reader.xreadgroup(
                    QUEUE_GROUP, self.name, {self.keys.queue: ">"}, count=1, block=self.block_ms
                )
                backoff = 0.1
            except REDIS_ERRORS as exc:
                slots.release()
                if self.stopping:
                    return
                logger.warning("queue read failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except ResponseError as exc:
                slots.release()
                if "NOGROUP" not in str(exc):
                    raise
                group_ready = False
                continue
            entries = [entry for _, stream in stream_entries(reply) for entry in stream]
            if not entries:
                slots.release()
                continue
            for entry_id, fields in entries:
                task = asyncio.create_task(self.process(entry_id, fields.get("jobId", "")))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
                task.add_done_callback(lambda _: slots.release())

    async def process(self, entry_id: str, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None or job.status.terminal:
            logger.info("queue entry %s: job %s is gone or finished; acknowledging", entry_id, job_id)
            await self.ack(entry_id)
            return
        handler = self.handlers.get(job.type)
        started = await self.store.append(
            job.id,
            EventType.STATUS,
            {"status": JobStatus.PROCESSING.value, "message": f"Started by {self.name}", "worker": self.name},
            status=JobStatus.PROCESSING.value,
            message=f"Started by {self.name}",
            started_at=now_iso(),
            worker=self.name,
            attempts=job.attempts + 1,
        )
        if started is None:
            await self.ack(entry_id)
            return
        logger.info("job %s started (type %s, attempt %d)", job.id, job.type, job.attempts + 1)
        context = JobContext(self.store, job)
        try:
            if handler is None:
                raise JobError(f"No handler for job type {job.type!r}")
            result = await handler(context)
        except JobError as exc:
            await self.finish_failed(job.id, str(exc), context.progress_percent)
        except asyncio.CancelledError:
            logger.warning("job %s interrupted; left pending for another worker", job.id)
            raise
        except Exception as exc:
            logger.exception("job %s: handler raised", job.id)
            await self.finish_failed(job.id, f"{type(exc).__name__}: {exc}", context.progress_percent)
        else:
            await self.store.append(
                job.id,
                EventType.COMPLETE,
                {"status": JobStatus.COMPLETED.value, "progress": 100, "result": result},
                status=JobStatus.COMPLETED.value,
                progress=100,
                result=result,
                message="Completed",
                finished_at=now_iso(),
            )
            logger.info("job %s completed", job.id)
        await self.ack(entry_id)

    async def finish_failed(self, job_id: str, error: str, progress: int) -> None:
        await self.store.append(
            job_id,
            EventType.FAILED,
            {"status": JobStatus.FAILED.value, "progress": progress, "error": error},
            status=JobStatus.FAILED.value,
            error=error,
            message="Failed",
            finished_at=now_iso(),
        )
        logger.info("job %s failed: %s", job_id, error)

    async def ack(self, entry_id: str) -> None:
        await self.store.redis.xack(self.keys.queue, QUEUE_GROUP, entry_id)

    async def stop(self, loop_task: asyncio.Task[None]) -> None:
        """Stop taking jobs, then cancel running ones: their entries stay pending for another worker."""
        self.stopping = True
        await stop_reader(loop_task, self.reader)
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
