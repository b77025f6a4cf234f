"""The consumer-group loop: take jobs from the queue stream, run them, acknowledge them.

Delivery is at-least-once. An entry is acknowledged only once its job has reached a
terminal state. A running job's entry is kept fresh (``XCLAIM … JUSTID`` every third of
the visibility timeout); the entry of a worker that died goes idle, and after the
visibility timeout another worker takes it over with ``XAUTOCLAIM`` and continues the job
from its last reported step, counting an attempt. Past the attempt limit the job ends
FAILED with the reason. A job that is not waiting to run (finished, gone, or a duplicate
entry of a job another worker runs) is acknowledged without running it.

On a stop, the worker takes no new jobs, lets running ones finish within a grace period,
and hands the rest back to the queue so another worker continues them at once.

The commands on the queue are :class:`jobprogress_core.queue.JobQueue`'s; one run of one
job is a :class:`.job_run.JobRun`; handing back is in :mod:`.handback`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from functools import partial

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobprogress_client.backoff import Backoff
from jobprogress_core.keys import Keys
from jobprogress_core.logs import job_scope
from jobprogress_core.metrics import count_finished
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.queue import JobQueue
from jobprogress_core.redis import REDIS_ERRORS, Entry, stop_reader
from jobprogress_core.store import JobStore
from jobprogress_core.tasks import cancel_and_wait

from .context import HandlerRegistry
from .handback import hand_back, release_unseen
from .job_run import JobRun

logger = logging.getLogger(__name__)

#: How often a worker looks for dead consumers in the group.
CONSUMER_SWEEP_SECONDS = 60.0
#: Beyond its blocking read, how long the job loop may go without a turn before it is stuck
#: (above the Redis socket timeout, so a read that has to time out is not taken for one).
STUCK_AFTER_SECONDS = 15.0


def consumer_name() -> str:
    return f"worker-{socket.gethostname().split('.')[0]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s ended by an error", task.get_name(), exc_info=task.exception())


@dataclass(frozen=True)
class Limits:
    visibility_timeout: float = 30.0
    max_attempts: int = 3
    time_limit: float = 90_000.0
    grace_seconds: float = 20.0
    outage_grace: float = 120.0


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
        limits: Limits | None = None,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.reader = reader
        self.keys = keys
        self.handlers = handlers
        self.concurrency = concurrency
        self.block_ms = block_ms
        self.limits = limits or Limits()
        self.name = name or consumer_name()
        self.running: dict[str, tuple[str, asyncio.Task[None]]] = {}  # entry id -> job id, task
        self.task: asyncio.Task[None] | None = None
        self.refresher: asyncio.Task[None] | None = None
        self.stopping = False
        self.reading = False
        #: When the job loop last turned, and whether it waits for a free slot (not stuck).
        self.turned_at = 0.0
        self.waiting_for_slot = False
        visibility = self.limits.visibility_timeout
        self.queue = JobQueue(store.redis, keys, visibility_timeout=visibility, reader=reader)
        self.group_ready = False

    @property
    def alive(self) -> bool:
        """Both loops run: taking jobs, and keeping the claims of running ones fresh."""
        loops = (self.task, self.refresher)
        return all(task is not None and not task.done() for task in loops)

    def liveness(self) -> tuple[bool, str]:
        """For Consul's TTL check: does the job loop turn? It may wait for a free slot as long
        as jobs run; otherwise it turns at least once per blocking read."""
        if not self.alive:
            return False, "the job loop has stopped"
        if self.waiting_for_slot:
            return True, f"all {self.concurrency} slots busy"
        idle = asyncio.get_running_loop().time() - self.turned_at
        if idle > self.block_ms / 1000 + STUCK_AFTER_SECONDS:
            return False, f"the job loop has not turned for {idle:.0f}s"
        return True, f"{len(self.running)} of {self.concurrency} slots busy"

    def start(self) -> None:
        self.turned_at = asyncio.get_running_loop().time()
        self.task = asyncio.create_task(self.run(), name="worker-consumer")
        self.task.add_done_callback(_log_crash)
        self.refresher = asyncio.create_task(self.keep_claims_fresh(), name="worker-claims")
        self.refresher.add_done_callback(_log_crash)

    async def run(self) -> None:
        """Take jobs while there are free slots: stale ones first, then new ones."""
        slots = asyncio.Semaphore(self.concurrency)
        backoff = Backoff(first=0.1, cap=5.0)
        loop = asyncio.get_running_loop()
        while not self.stopping:
            self.turned_at = loop.time()
            self.waiting_for_slot = True
            await slots.acquire()
            self.waiting_for_slot = False
            self.turned_at = loop.time()
            try:
                entries, reclaimed = await self._take()
                backoff.reset()
            except RedisError as exc:
                slots.release()
                if self.stopping:
                    return
                if "NOGROUP" in str(exc):
                    self.group_ready = False  # the queue was deleted: create the group again
                logger.warning("queue read failed (%s); retrying in %.1fs", exc, backoff.delay)
                await backoff.sleep()
                continue
            finally:
                self.reading = False
            if not entries:
                slots.release()
            for entry_id, fields in entries:
                self._launch(entry_id, fields.get("jobId", ""), slots, reclaimed=reclaimed)

    async def _take(self) -> tuple[list[Entry], bool]:
        """Entries to run, and whether they are reclaimed: a stale one if there is, else
        new ones (a blocking read: it sets :attr:`reading`, which the loop clears)."""
        if not self.group_ready:
            await self.queue.ensure_group()
            self.group_ready = True
        entries = await self.queue.reclaim(self.name)
        if entries:
            return entries, True
        self.reading = True
        entries = await self.queue.read(self.name, block_ms=self.block_ms)
        self.turned_at = asyncio.get_running_loop().time()
        return entries, False

    def _launch(self, entry_id: str, job_id: str, slots: asyncio.Semaphore, *, reclaimed: bool) -> None:
        """Process an entry in a task of its own, which frees its slot when it ends."""
        if entry_id in self.running:
            # Our own running job, idle because Redis was away: the claim is ours again.
            slots.release()
            return
        task = asyncio.create_task(self.process(entry_id, job_id, reclaimed=reclaimed))
        self.running[entry_id] = (job_id, task)
        task.add_done_callback(partial(self._forget, entry_id))
        task.add_done_callback(lambda _: slots.release())
        task.add_done_callback(_log_crash)

    def _forget(self, entry_id: str, _: asyncio.Task[None]) -> None:
        self.running.pop(entry_id, None)

    async def keep_claims_fresh(self) -> None:
        """Reset the idle time of the entries of running jobs, so nobody reclaims them; now
        and then, forget consumers of the group that died long ago and hold nothing."""
        period = self.limits.visibility_timeout / 3
        waited = 0.0
        while True:
            await asyncio.sleep(period)
            waited += period
            entry_ids = list(self.running)
            try:
                await self.queue.refresh(self.name, entry_ids)
                if waited >= CONSUMER_SWEEP_SECONDS:
                    waited = 0.0
                    await self.queue.forget_dead_consumers(self.name)
            except RedisError as exc:
                logger.warning("could not refresh %d claims: %s", len(entry_ids), exc)

    async def process(self, entry_id: str, job_id: str, *, reclaimed: bool = False) -> None:
        """Run the job of a queue entry, unless it need not run; acknowledge the entry once
        the job has ended. Its log lines carry the job's id."""
        with job_scope(job_id):
            job = await self._job_to_run(entry_id, job_id, reclaimed=reclaimed)
            if job is not None:
                run = JobRun(
                    self.store,
                    job,
                    entry_id,
                    self.handlers.get(job.type),
                    worker=self.name,
                    time_limit=self.limits.time_limit,
                    outage_grace=self.limits.outage_grace,
                )
                if not await run.run():
                    return  # Redis stayed away: the entry stays pending, for a later attempt
            await self.queue.ack(entry_id)

    async def _job_to_run(self, entry_id: str, job_id: str, *, reclaimed: bool) -> Job | None:
        """The entry's job if it is to run now. ``None`` when it is not waiting to run
        (finished, gone, running under this entry or, live, under another), or was
        cancelled, or has had all its attempts: then it has been ended if need be, and the
        entry is done with."""
        job = await self.store.get(job_id)
        if job is None or job.status.terminal or (job.status is JobStatus.PROCESSING and not reclaimed):
            state = job.status.value if job else "gone"
            logger.info("queue entry %s: job %s is %s; acknowledging", entry_id, job_id, state)
            return None
        if job.status is JobStatus.PROCESSING and await self.queue.held_elsewhere(job, entry_id):
            logger.info(
                "queue entry %s: job %s runs under entry %s; acknowledging", entry_id, job_id, job.entry
            )
            return None
        if job.cancel_requested:
            if await self.store.finish(job.id, EventType.CANCELLED):
                count_finished(job.type, EventType.CANCELLED)
            return None
        if job.attempts + 1 > self.limits.max_attempts:
            reason = f"Gave up after {job.attempts} attempts: worker {job.worker or '?'} stopped responding"
            if await self.store.finish(job.id, EventType.FAILED, error=reason):
                count_finished(job.type, EventType.FAILED)
            logger.warning("job %s: %s", job.id, reason)
            return None
        return job

    async def stop(self) -> None:
        """Take no new jobs; give running ones the grace period; hand the rest back."""
        self.stopping = True
        if self.task is not None:
            if not self.reading:
                self.task.cancel()  # waiting for a free slot or backing off: safe to cancel
            await stop_reader(self.task, self.reader)
        running = dict(self.running)
        if running:
            logger.info("waiting up to %gs for %d running jobs", self.limits.grace_seconds, len(running))
            await asyncio.wait([task for _, task in running.values()], timeout=self.limits.grace_seconds)
        left = {entry_id: job_id for entry_id, (job_id, task) in running.items() if not task.done()}
        await cancel_and_wait(*(task for _, task in running.values()))
        await asyncio.gather(*(task for _, task in running.values()), return_exceptions=True)
        if self.refresher is not None:
            await cancel_and_wait(self.refresher)
        handed = 0
        for entry_id, job_id in left.items():
            try:
                handed += await hand_back(self.store, self.queue, self.name, entry_id, job_id)
            except REDIS_ERRORS as exc:
                logger.warning("could not hand job %s back (%s); it will be reclaimed", job_id, exc)
        logger.info(
            "stopped: %d finished in the grace period, %d handed back", len(running) - len(left), handed
        )
        await release_unseen(self.store, self.queue, self.name)
