"""Ends the external jobs whose reporter went quiet: no worker watches an external job's
time limit, so every job-queue instance runs a sweeper over the deadlines of the running
external jobs (:class:`jobprogress_core.deadlines.Deadlines`, a sorted set per partition in Redis).

A job past its time limit is claimed atomically (one instance takes it; if that one dies, the
claim lapses and another does) and ended in one atomic step with its terminal event:
``failed`` with the reason, or ``cancelled`` when its owner had asked for cancellation and
the reporter never confirmed it. A job that has ended already is only dropped from the set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from jobprogress_core.deadlines import Deadlines
from jobprogress_core.limits import RateLimit
from jobprogress_core.metrics import count_finished
from jobprogress_core.model import EXTERNAL, EventType, seconds_since
from jobprogress_core.redis import REDIS_ERRORS
from jobprogress_core.reports import Reports
from jobprogress_core.store import JobStore
from jobprogress_core.tasks import cancel_and_wait
from jobprogress_core.web import JOB_QUEUE_SETTINGS, KEYS, REDIS, STORE

from .reporting import REPORT_LIMIT, REPORTS
from .views import DEADLINES

__all__ = ["external_ctx", "sweep", "sweep_forever"]

logger = logging.getLogger(__name__)


async def sweep(store: JobStore, deadlines: Deadlines) -> int:
    """End every external job past its time limit that this caller claims; how many ended."""
    ended = 0
    for job_id in await deadlines.claim_due():
        job = await store.get(job_id)
        if job is not None and not job.status.terminal:
            limit = float(job.params.get("timeLimitSeconds") or 0) or seconds_since(job.created_at)
            if job.cancel_requested:
                reason = f"Cancelled: the reporter did not end the job within its time limit of {limit:g}s"
                event = await store.finish(job_id, EventType.CANCELLED, error=reason)
            else:
                event = await store.finish(
                    job_id,
                    EventType.FAILED,
                    error=f"Time limit of {limit:g}s exceeded: the external job's reporter did not end it",
                )
            if event is not None:
                ended += 1
                count_finished(EXTERNAL, event.type)
                logger.info("job %s: external job past its time limit, ended %s", job_id, event.type.value)
        await deadlines.remove(job_id)
    return ended


async def sweep_forever(store: JobStore, deadlines: Deadlines, interval: float) -> None:
    while True:
        try:
            await sweep(store, deadlines)
        except REDIS_ERRORS as exc:
            logger.warning("could not sweep external jobs: %s", exc)
        except Exception:
            logger.exception("sweeping external jobs failed")
        await asyncio.sleep(interval)


async def external_ctx(app: web.Application) -> AsyncIterator[None]:
    """External jobs (after the Redis context): their appends, deadlines, the reports limit
    per job, and the sweeper."""
    settings = app[JOB_QUEUE_SETTINGS]
    store = app[STORE]
    app[REPORTS] = Reports(store, keys_kept=settings.event_stream_maxlen)
    app[DEADLINES] = deadlines = Deadlines(app[REDIS], app[KEYS])
    app[REPORT_LIMIT] = RateLimit(
        app[REDIS], app[KEYS], "report", limit=settings.reports_per_minute, period=60
    )
    task = asyncio.create_task(
        sweep_forever(store, deadlines, settings.external_sweep_seconds), name="external-sweeper"
    )
    yield
    await cancel_and_wait(task)
