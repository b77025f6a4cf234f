"""Handing jobs back to the queue, so another worker takes them at once rather than after
the visibility timeout: when a worker stops, the jobs it still runs after the grace period
and the entries Redis gave it that it never saw; while it runs, an entry a blocking read
brought when no slot was free. Each goes back to its own shard (one transaction: a new
entry, the old one acknowledged)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from jobprogress_core.model import EventType, JobStatus
from jobprogress_core.queue import JobQueue, QueueEntry
from jobprogress_core.store import ClaimLost, JobStore

from .metrics import ENTRIES_GIVEN_BACK

__all__ = ["give_back", "hand_back", "release_unseen"]

logger = logging.getLogger(__name__)


async def hand_back(store: JobStore, queue: JobQueue, worker: str, entry: QueueEntry) -> bool:
    """Put a job that ``worker`` holds under ``entry`` back in the queue for another worker
    to continue; whether it was (not when it has ended, or another run holds it)."""
    job = await store.get(entry.job_id)
    if job is None or job.status.terminal:
        await queue.ack(entry)
        return False
    message = f"Handed back by {worker} (worker stopping); another worker continues"
    try:
        await store.append(
            job.id,
            EventType.STATUS,
            {"status": JobStatus.QUEUED.value, "message": message},
            holder=entry.id,
            status=JobStatus.QUEUED.value,
            message=message,
            worker="",
            entry="",
            attempts=max(job.attempts - 1, 0),  # a hand-back is not a failed attempt
        )
    except ClaimLost:
        return False
    await queue.requeue(entry)
    logger.info("job %s handed back", job.id)
    return True


async def give_back(queue: JobQueue, entry: QueueEntry) -> None:
    """An entry a blocking read brought when no slot was free (see :mod:`.intake`) goes back
    to its shard at once, its job untouched; if Redis refuses, it stays pending for this
    worker, which releases it as it stops (or another reclaims it)."""
    try:
        again = await queue.requeue(entry)
    except RedisError as exc:
        logger.warning("could not give back queue entry %s (job %s): %s", entry.id, entry.job_id, exc)
        return
    ENTRIES_GIVEN_BACK.inc()
    logger.info("no free slot for job %s: given back to its shard as entry %s", entry.job_id, again.id)


async def release_unseen(store: JobStore, queue: JobQueue, worker: str) -> None:
    """Entries Redis gave ``worker`` as it stopped reading (the reply never arrived) go back
    to the queue at once rather than waiting out the visibility timeout; then the worker
    leaves the consumer groups."""
    try:
        for entry in await queue.held_by(worker):
            job = await store.get(entry.job_id)
            if job is not None and job.entry == entry.id:
                await hand_back(store, queue, worker, entry)
                continue
            if job is not None and job.status is JobStatus.QUEUED:
                await queue.requeue(entry)
            else:
                await queue.ack(entry)
            logger.info("released unseen queue entry %s (job %s)", entry.id, entry.job_id)
        await queue.leave(worker)
    except RedisError as exc:
        logger.warning("could not release entries or leave the group: %s", exc)
