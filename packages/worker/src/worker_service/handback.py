"""Handing jobs back to the queue when a worker stops, so another worker continues them at
once rather than after the visibility timeout: the jobs it still runs after the grace
period, and the entries Redis gave it that it never saw."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from jobprogress_core.model import EventType, JobStatus
from jobprogress_core.queue import JobQueue
from jobprogress_core.store import ClaimLost, JobStore

__all__ = ["hand_back", "release_unseen"]

logger = logging.getLogger(__name__)


async def hand_back(store: JobStore, queue: JobQueue, worker: str, entry_id: str, job_id: str) -> bool:
    """Put a job that ``worker`` holds under ``entry_id`` back in the queue for another
    worker to continue; whether it was (not when it has ended, or another run holds it)."""
    job = await store.get(job_id)
    if job is None or job.status.terminal:
        await queue.ack(entry_id)
        return False
    message = f"Handed back by {worker} (worker stopping); another worker continues"
    try:
        await store.append(
            job_id,
            EventType.STATUS,
            {"status": JobStatus.QUEUED.value, "message": message},
            holder=entry_id,
            status=JobStatus.QUEUED.value,
            message=message,
            worker="",
            entry="",
            attempts=max(job.attempts - 1, 0),  # a hand-back is not a failed attempt
        )
    except ClaimLost:
        return False
    await queue.enqueue(job_id)
    await queue.ack(entry_id)
    logger.info("job %s handed back", job_id)
    return True


async def release_unseen(store: JobStore, queue: JobQueue, worker: str) -> None:
    """Entries Redis gave ``worker`` as it stopped reading (the reply never arrived) go back
    to the queue at once rather than waiting out the visibility timeout; then the worker
    leaves the consumer group."""
    try:
        for entry_id, job_id in await queue.held_by(worker):
            job = await store.get(job_id)
            if job is not None and job.entry == entry_id:
                await hand_back(store, queue, worker, entry_id, job_id)
                continue
            if job is not None and job.status is JobStatus.QUEUED:
                await queue.enqueue(job_id)
            await queue.ack(entry_id)
            logger.info("released unseen queue entry %s (job %s)", entry_id, job_id)
        await queue.leave(worker)
    except RedisError as exc:
        logger.warning("could not release entries or leave the group: %s", exc)
