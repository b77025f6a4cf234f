"""Prometheus metrics of job-queue-service: submissions, Web Push messages, and the queue as
Redis holds it."""

from __future__ import annotations

import functools

from aiohttp import web
from prometheus_client import Counter, Gauge

from jobprogress_core.metrics import METRICS_REFRESHERS
from jobprogress_core.web import QUEUE

JOBS_SUBMITTED = Counter("jobprogress_jobs_submitted_total", "Jobs accepted and queued, by type", ["type"])


@functools.lru_cache(maxsize=256)
def jobs_submitted(job_type: str) -> Counter:
    """The submissions of one type, looked up once (the types are a setting, and ``external``)."""
    return JOBS_SUBMITTED.labels(job_type)


PUSH_MESSAGES = Counter(
    "jobprogress_push_messages_total",
    "Web Push messages for ended jobs, by outcome: sent, gone (404/410: subscription removed), failed",
    ["outcome"],
)
QUEUE_DEPTH = Gauge("jobprogress_queue_depth", "Queue entries no worker has taken yet")
QUEUE_PENDING = Gauge(
    "jobprogress_queue_pending",
    "Jobs taken by a worker and not yet acknowledged (running, or to be reclaimed)",
)


def setup_queue_metrics(app: web.Application) -> None:
    """Read the queue's depth and pending count from Redis on every scrape. Every instance
    reports the same shared numbers: graph them with ``max``, not ``sum``."""

    async def queue_counts() -> None:
        waiting, pending = await app[QUEUE].counts()
        QUEUE_DEPTH.set(waiting)
        QUEUE_PENDING.set(pending)

    app[METRICS_REFRESHERS].append(queue_counts)
