"""The consumer-group loop: take jobs from the queue shards, run them, acknowledge them.

Delivery is at-least-once. An entry is acknowledged only once its job has reached a
terminal state. A running job's entry is kept fresh (``XCLAIM … JUSTID`` every third of
the visibility timeout); the entry of a worker that died goes idle, and after the
visibility timeout another worker takes it over with ``XAUTOCLAIM`` (on whichever shard it
is) and continues the job from its last reported step, counting an attempt. Past the
attempt limit the job ends FAILED with the reason. A job that is not waiting to run
(finished, gone, or a duplicate entry of a job another worker runs) is acknowledged without
running it.

The job loop holds at most ``concurrency`` jobs. Whenever a slot is free it looks for stale
entries (every quarter of the visibility timeout), then sweeps the shards for new ones; when
there are none it waits on every shard at once. How entries are read, fairly and never
beyond the free slots, is in :mod:`.intake`.

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
from jobprogress_core.queue import JobQueue, QueueEntry
from jobprogress_core.redis import REDIS_ERRORS, close
from jobprogress_core.store import JobStore
from jobprogress_core.tasks import cancel_and_wait

from .context import HandlerRegistry
from .handback import hand_back, release_unseen
from .intake import Intake, Slots
from .job_run import JobRun

logger = logging.getLogger(__name__)

#: How often a worker looks for dead consumers in the group.
CONSUMER_SWEEP_SECONDS = 60.0
#: Beyond its blocking read, how long the job loop may go without a turn before it is stuck
#: (above the Redis socket timeout, so a read that has to time out is not taken for one).
STUCK_AFTER_SECONDS = 15.0
#: How long a stop waits for the job loop to finish a sweep before cancelling it.
STOP_TIMEOUT = 5.0


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
        self.running: dict[QueueEntry, asyncio.Task[None]] = {}
        self.slots = Slots(concurrency)
        self.task: asyncio.Task[None] | None = None
        self.refresher: asyncio.Task[None] | None = None
        self.stopping = False
        #: When the job loop last turned, and whether it waits for a free slot (not stuck).
        self.turned_at = 0.0
        self.waiting_for_slot = False
        visibility = self.limits.visibility_timeout
        self.queue = JobQueue(store.redis, keys, visibility_timeout=visibility, reader=reader)
        self.intake = Intake(self.queue, self.name, self.slots, self._launch, block_ms=block_ms)

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
        """Take jobs while there are free slots: stale ones first, then new ones; wait on
        every shard when there are none."""
        backoff = Backoff(first=0.1, cap=5.0)
        loop = asyncio.get_running_loop()
        while not self.stopping:
            self.turned_at = loop.time()
            self.waiting_for_slot = True
            await self.slots.wait_free()
            self.waiting_for_slot = False
            self.turned_at = loop.time()
            try:
                taken = await self.intake.take()
                # Nothing to take: wait on the shards, unless a read took the last slot meanwhile.
                if not taken and self.slots.free and not self.stopping:
                    await self.intake.wait()
                backoff.reset()
            except RedisError as exc:
                if self.stopping:
                    return
                if "NOGROUP" in str(exc):
                    self.intake.group_ready = False  # the queue was deleted: create the groups again
                logger.warning("queue read failed (%s); retrying in %.1fs", exc, backoff.delay)
                await backoff.sleep()

    def _launch(self, entry: QueueEntry, reclaimed: bool) -> None:
        """Process an entry, in a task of its own, under the slot taken for it; the task
        frees it when it ends."""
        if entry in self.running:
            # Our own running job, idle because Redis was away: the claim is ours again.
            self.slots.release()
            return
        task = asyncio.create_task(self.process(entry, reclaimed=reclaimed))
        self.running[entry] = task
        task.add_done_callback(partial(self._forget, entry))
        task.add_done_callback(_log_crash)

    def _forget(self, entry: QueueEntry, _: asyncio.Task[None]) -> None:
        self.running.pop(entry, None)
        self.slots.release()

    async def keep_claims_fresh(self) -> None:
        """Reset the idle time of the entries of running jobs, so nobody reclaims them; now
        and then, forget consumers of the groups that died long ago and hold nothing."""
        period = self.limits.visibility_timeout / 3
        waited = 0.0
        while True:
            await asyncio.sleep(period)
            waited += period
            entries = list(self.running)
            try:
                await self.queue.refresh(self.name, entries)
                if waited >= CONSUMER_SWEEP_SECONDS:
                    waited = 0.0
                    await self.queue.forget_dead_consumers(self.name)
            except RedisError as exc:
                logger.warning("could not refresh %d claims: %s", len(entries), exc)

    async def process(self, entry: QueueEntry, *, reclaimed: bool = False) -> None:
        """Run the job of a queue entry, unless it need not run; acknowledge the entry once
        the job has ended. Its log lines carry the job's id."""
        with job_scope(entry.job_id):
            job = await self._job_to_run(entry, reclaimed=reclaimed)
            if job is not None:
                run = JobRun(
                    self.store,
                    job,
                    entry.id,  # a job's entries are all in its shard: the id names it
                    self.handlers.get(job.type),
                    worker=self.name,
                    time_limit=self.limits.time_limit,
                    outage_grace=self.limits.outage_grace,
                )
                if not await run.run():
                    return  # Redis stayed away: the entry stays pending, for a later attempt
            await self.queue.ack(entry)

    async def _job_to_run(self, entry: QueueEntry, *, reclaimed: bool) -> Job | None:
        """The entry's job if it is to run now. ``None`` when it is not waiting to run
        (finished, gone, running under this entry or, live, under another), or was
        cancelled, or has had all its attempts: then it has been ended if need be, and the
        entry is done with."""
        job = await self.store.get(entry.job_id)
        if job is None or job.status.terminal or (job.status is JobStatus.PROCESSING and not reclaimed):
            state = job.status.value if job else "gone"
            logger.info("queue entry %s: job %s is %s; acknowledging", entry.id, entry.job_id, state)
            return None
        if job.status is JobStatus.PROCESSING and await self.queue.held_elsewhere(job, entry):
            logger.info(
                "queue entry %s: job %s runs under entry %s; acknowledging", entry.id, job.id, job.entry
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
        await self._stop_taking()
        running = dict(self.running)
        if running:
            logger.info("waiting up to %gs for %d running jobs", self.limits.grace_seconds, len(running))
            await asyncio.wait(running.values(), timeout=self.limits.grace_seconds)
        left = [entry for entry, task in running.items() if not task.done()]
        await cancel_and_wait(*running.values())
        await asyncio.gather(*running.values(), return_exceptions=True)
        if self.refresher is not None:
            await cancel_and_wait(self.refresher)
        handed = 0
        for entry in left:
            try:
                handed += await hand_back(self.store, self.queue, self.name, entry)
            except REDIS_ERRORS as exc:
                logger.warning("could not hand job %s back (%s); it will be reclaimed", entry.job_id, exc)
        logger.info(
            "stopped: %d finished in the grace period, %d handed back", len(running) - len(left), handed
        )
        await release_unseen(self.store, self.queue, self.name)

    async def _stop_taking(self) -> None:
        """End the job loop and the blocking reads. The loop is cancelled unless it is in
        the middle of a sweep (short: it sees :attr:`stopping` right after)."""
        self.intake.closing = True
        if self.task is not None:
            if not self.intake.taking:
                await cancel_and_wait(self.task)  # waiting for a slot, on the shards, or backing off
            _, late = await asyncio.wait([self.task], timeout=STOP_TIMEOUT)
            if late:
                logger.warning("the job loop did not stop in %.0fs; cancelling it", STOP_TIMEOUT)
                await cancel_and_wait(self.task)
        await self.intake.close()
        await close(self.reader)
