"""One run of one job by a worker, under the claim of its queue entry: the job marked
``PROCESSING`` (an attempt counted), its handler run under the time limit, and its end
recorded with the terminal event.

Running the handler gives an :data:`Outcome`: an :class:`Ending` to record (``complete``,
``failed`` or ``cancelled``), or an :class:`Interruption` when the run has no end of its
own to record (the job ended elsewhere, another run took it over, or Redis stayed away).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from dataclasses import dataclass

from jobprogress_core.metrics import count_finished
from jobprogress_core.model import EventType, Job, JobStatus, now_iso, seconds_since
from jobprogress_core.redis import REDIS_ERRORS, retry_while_unavailable
from jobprogress_core.store import ClaimLost, JobStore

from .context import Handler, JobCancelled, JobContext, JobEnded, JobError, ReportFailed
from .metrics import JOB_DURATION, JOBS_IN_PROGRESS, JOBS_RECLAIMED

__all__ = ["Ending", "Interruption", "JobRun", "Outcome"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ending:
    """How the handler ended its job: the terminal event to record, with its result or error."""

    event_type: EventType
    result: str | None = None
    error: str | None = None


class Interruption(enum.Enum):
    """Why a run stopped with no end of its own to record."""

    ENDED_ELSEWHERE = "ended elsewhere"
    TAKEN_OVER = "taken over by another run"
    UNREPORTED = "could not report"

    @property
    def settled(self) -> bool:
        """Whether the queue entry is done with; else it stays pending for a later attempt."""
        return self is not Interruption.UNREPORTED


Outcome = Ending | Interruption


class JobRun:
    """A run of ``job`` under queue entry ``entry_id`` by worker ``worker``. ``time_limit``
    applies unless the job's ``timeLimitSeconds`` says otherwise; reports retry through a
    Redis outage of ``outage_grace`` seconds."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        entry_id: str,
        handler: Handler | None,
        *,
        worker: str,
        time_limit: float,
        outage_grace: float,
    ) -> None:
        self.store = store
        self.job = job
        self.entry_id = entry_id
        self.handler = handler
        self.worker = worker
        self.time_limit = time_limit
        self.outage_grace = outage_grace
        #: The job's first start (an earlier attempt's when it is taken over), for its duration.
        self.started_at = job.started_at or now_iso()
        self.context = JobContext(store, job, entry=entry_id, outage_grace=outage_grace)

    async def run(self) -> bool:
        """Start the job, run its handler, record its end: whether the queue entry is done
        with (``False``: it stays pending, the job could not be reported)."""
        if not await self.start():
            return True
        JOBS_IN_PROGRESS.inc()
        try:
            outcome = await self.run_handler()
            if isinstance(outcome, Interruption):
                return outcome.settled
            return await self.record_end(outcome)
        finally:
            JOBS_IN_PROGRESS.dec()

    async def start(self) -> bool:
        """Mark the job ``PROCESSING`` by this run, counting an attempt; ``False`` when it has
        ended meanwhile."""
        job, attempt = self.job, self.job.attempts + 1
        taking_over = job.status is JobStatus.PROCESSING
        if taking_over:
            message = (
                f"Reclaimed by {self.worker} after {job.worker or '?'} stopped responding (attempt {attempt})"
            )
        else:
            message = f"Started by {self.worker} (attempt {attempt})"
        started = await self.store.append(
            job.id,
            EventType.STATUS,
            {
                "status": JobStatus.PROCESSING.value,
                "message": message,
                "worker": self.worker,
                "attempt": attempt,
            },
            status=JobStatus.PROCESSING.value,
            message=message,
            started_at=self.started_at,
            worker=self.worker,
            entry=self.entry_id,
            attempts=attempt,
        )
        if started is None:
            return False
        if taking_over:
            JOBS_RECLAIMED.inc()
        logger.info("job %s: %s", job.id, message)
        return True

    async def run_handler(self) -> Outcome:
        """Run the handler under the time limit; how it ended. A cancellation of this task
        (a stopping worker) is not an outcome: it goes through."""
        limit = float(self.job.params.get("timeLimitSeconds") or self.time_limit)
        deadline: asyncio.Timeout | None = None
        try:
            if self.handler is None:
                raise JobError(f"No handler for job type {self.job.type!r}")
            async with asyncio.timeout(limit) as deadline:
                await self.context.check_cancelled()
                result = await self.handler(self.context)
        except JobCancelled:
            return Ending(EventType.CANCELLED)
        except JobError as exc:
            return Ending(EventType.FAILED, error=str(exc))
        except JobEnded:
            logger.info("job %s ended elsewhere", self.job.id)
            return Interruption.ENDED_ELSEWHERE
        except ClaimLost:
            logger.warning(
                "job %s was taken over by another run; letting go of entry %s", self.job.id, self.entry_id
            )
            return Interruption.TAKEN_OVER
        except ReportFailed as exc:
            logger.error("job %s: could not report (%s); the job stays pending", self.job.id, exc)
            return Interruption.UNREPORTED
        except Exception as exc:  # the handler's own failure, whatever it is
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                return Ending(EventType.FAILED, error=f"Time limit of {limit:g}s exceeded")
            logger.exception("job %s: handler raised", self.job.id)
            return Ending(EventType.FAILED, error=f"{type(exc).__name__}: {exc}")
        return Ending(EventType.COMPLETE, result=result)

    async def record_end(self, ending: Ending) -> bool:
        """Write the job's terminal event, in one atomic step with its state, retried through
        a short outage without ever writing it twice: whether the queue entry is done with
        (``False``: Redis stayed away, the entry stays pending)."""
        token = uuid.uuid4().hex  # one for every retry of this write
        try:
            recorded = await retry_while_unavailable(
                lambda: self.store.finish(
                    self.job.id,
                    ending.event_type,
                    result=ending.result,
                    error=ending.error,
                    progress=self.context.progress_percent,
                    holder=self.entry_id,
                    token=token,
                ),
                grace=self.outage_grace,
            )
        except ClaimLost:
            return True
        except REDIS_ERRORS as exc:
            logger.error("job %s: could not record its end (%s); the job stays pending", self.job.id, exc)
            return False
        if recorded is None:  # it had ended already (cancelled while queued, given up elsewhere)
            what = ending.event_type.value
            logger.info("job %s had already ended; its %s is not recorded", self.job.id, what)
            return True
        status = count_finished(self.job.type, ending.event_type)
        duration = max(seconds_since(self.started_at), 0.0)  # a reclaimed job's start is another host's clock
        JOB_DURATION.labels(self.job.type, status).observe(duration)
        why = f" ({ending.error})" if ending.error else ""
        logger.info("job %s ended: %s after %.1fs%s", self.job.id, status, duration, why)
        return True
