"""Prometheus metrics every service shares, and the ``/metrics`` endpoint.

Names follow Prometheus conventions: ``jobprogress_`` prefix, ``_total`` for counters,
base units (seconds). Each service adds its own in its ``metrics`` module; all of them are
listed in the README's metrics table and drawn by ``deploy/grafana/jobprogress.json``.

Gauges that describe shared state rather than this process (the queue's depth) are read
from Redis when Prometheus scrapes, by the refreshers a service adds to
:data:`METRICS_REFRESHERS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler

from . import __version__
from .model import TERMINAL_STATUS_OF, EventType

logger = logging.getLogger(__name__)

#: How long a scrape waits for the refreshers before answering with what it has.
REFRESH_TIMEOUT = 2.0

#: Read on each scrape, before the metrics are written out.
METRICS_REFRESHERS = web.AppKey("metrics_refreshers", list[Callable[[], Awaitable[None]]])

BUILD_INFO = Gauge(
    "jobprogress_build_info", "Always 1: this process's service and version", ["service", "version"]
)

HTTP_REQUESTS = Counter(
    "jobprogress_http_requests_total",
    "HTTP requests answered, by route, method and status",
    ["service", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "jobprogress_http_request_duration_seconds",
    "Time to answer an HTTP request (for SSE: time to the end of the stream)",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 1800),
)

#: Counted where a job's terminal event is written: by a worker, or by job-queue-service
#: for a job cancelled before any worker took it.
JOBS_FINISHED = Counter(
    "jobprogress_jobs_finished_total", "Jobs that ended, by type and final status", ["type", "status"]
)


def count_finished(job_type: str, ending: EventType) -> str:
    """Count a job that ``ending`` (its terminal event, just written) ended; its status as
    the metrics label it: ``completed``, ``failed``, ``cancelled``."""
    status = TERMINAL_STATUS_OF[ending].value.lower()
    JOBS_FINISHED.labels(job_type, status).inc()
    return status


def setup_metrics(app: web.Application, service: str) -> None:
    """``GET /metrics`` on ``app``, in Prometheus's text format (or OpenMetrics, as asked)."""
    BUILD_INFO.labels(service, __version__).set(1)
    app[METRICS_REFRESHERS] = []
    render = make_aiohttp_handler(REGISTRY)

    async def metrics(request: web.Request) -> web.StreamResponse:
        for refresh in request.app[METRICS_REFRESHERS]:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    await refresh()
            except Exception as exc:  # a scrape answers with what it has
                logger.warning("metrics: %s failed: %s", getattr(refresh, "__name__", refresh), exc)
        return await render(request)

    app.router.add_get("/metrics", metrics)
