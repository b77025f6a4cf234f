"""``/metrics`` of every service tells the truth about what just happened: jobs submitted,
run, finished by status and cancelled; events sent, replayed and delivered; streams opened
and closed; the queue's depth and pending count; HTTP requests by route and status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobprogress_client import collect_events, submit_job
from jobprogress_core import __version__
from jobprogress_testing import Stack, eventually

pytestmark = pytest.mark.stack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, base_url: str) -> Samples:
    async with http.get(f"{base_url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled child not created yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_every_service_counts_what_a_job_did(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack()
    queue, worker, progress = (
        stack.url(name) for name in ("job-queue-service", "worker-service", "progress-service")
    )
    before = {url: await scrape(http, url) for url in (queue, worker, progress)}

    completed = await submit_job(http, queue, type="build", steps=3, durationSeconds=1)
    failed = await submit_job(http, queue, type="report", steps=3, durationSeconds=1, failAtStep=2)
    # Watched live from the start, each to its end; then the completed one read again, whole.
    live = await asyncio.gather(
        *(collect_events(http, f"{progress}/api/progress/{job}") for job in (completed, failed))
    )
    replayed = await collect_events(http, f"{progress}/api/progress/{completed}")
    assert [events[-1].event for events in live] == ["complete", "failed"]
    assert replayed == live[0]

    q = await scrape(http, queue)
    assert value(q, "jobprogress_jobs_submitted_total", type="build") == 1
    assert value(q, "jobprogress_jobs_submitted_total", type="report") == 1
    routes = {"service": "job-queue-service", "route": "/api/jobs", "method": "POST"}
    assert value(q, "jobprogress_http_requests_total", **routes, status="202") == 2
    assert value(q, "jobprogress_http_request_duration_seconds_count", **routes) == 2
    assert value(q, "jobprogress_build_info", service="job-queue-service", version=__version__) == 1

    async def worker_counted_both_ends() -> Samples:
        w = await scrape(http, worker)
        ended = value(w, "jobprogress_jobs_finished_total", type="build", status="completed") >= 1 and (
            value(w, "jobprogress_jobs_finished_total", type="report", status="failed") >= 1
        )
        return w if ended and value(w, "jobprogress_jobs_in_progress") == 0 else {}

    # The worker counts a job's end after it has appended the terminal event the client saw.
    w = await eventually(worker_counted_both_ends, "the worker's count of both jobs' ends")
    assert value(w, "jobprogress_jobs_finished_total", type="build", status="completed") == 1
    assert value(w, "jobprogress_jobs_finished_total", type="report", status="failed") == 1
    assert value(w, "jobprogress_job_duration_seconds_count", type="build", status="completed") == 1
    duration = value(w, "jobprogress_job_duration_seconds_sum", type="build", status="completed")
    assert duration >= 0.9  # the job takes 1 s
    assert value(w, "jobprogress_jobs_in_progress") == 0
    assert value(w, "jobprogress_jobs_reclaimed_total") == 0

    events = len(live[0]) + len(live[1]) + len(replayed)
    sent_before = sum(v for (n, _), v in before[progress].items() if n == "jobprogress_sse_events_sent_total")

    async def streams_closed() -> Samples:
        p = await scrape(http, progress)
        closed = value(p, "jobprogress_sse_disconnects_total", reason="completed") >= 3
        return p if closed and value(p, "jobprogress_sse_streams_active") == 0 else {}

    p = await eventually(streams_closed, "the three streams counted as closed")
    assert value(p, "jobprogress_sse_disconnects_total", reason="completed") == 3
    assert value(p, "jobprogress_sse_connections_total") == 3
    sent = sum(v for (n, _), v in p.items() if n == "jobprogress_sse_events_sent_total") - sent_before
    assert sent == events
    assert value(p, "jobprogress_sse_events_sent_total", type="complete") == 2
    assert value(p, "jobprogress_sse_events_sent_total", type="failed") == 1
    replayed_total = value(p, "jobprogress_sse_events_replayed_total")
    assert replayed_total >= len(replayed)
    # Live events were timed from their append to their write; those a stream caught up with
    # from the log were not. How many that was depends on when each stream connected.
    assert 0 < value(p, "jobprogress_sse_delivery_latency_seconds_count") <= sent - replayed_total
    assert value(p, "jobprogress_sse_delivery_latency_seconds_bucket", le="+Inf") == value(
        p, "jobprogress_sse_delivery_latency_seconds_count"
    )


async def test_the_queue_gauges_and_cancellations(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack()
    queue, worker = stack.url("job-queue-service"), stack.service("worker-service")
    worker.stop()

    waiting = [await submit_job(http, queue, type="build", steps=2, durationSeconds=1) for _ in range(3)]
    q = await scrape(http, queue)
    assert (value(q, "jobprogress_queue_depth"), value(q, "jobprogress_queue_pending")) == (3, 0)

    async with http.post(f"{queue}/api/jobs/{waiting[0]}/cancel") as response:
        assert response.status == 200  # still queued: cancelled at once, by job-queue-service
    q = await scrape(http, queue)
    assert value(q, "jobprogress_jobs_finished_total", type="build", status="cancelled") == 1

    long_job = await submit_job(http, queue, type="import", steps=30, durationSeconds=60)
    worker.start()

    async def running() -> bool:
        q = await scrape(http, queue)
        w = await scrape(http, worker.url)
        return (
            value(q, "jobprogress_queue_depth") == 0
            and value(q, "jobprogress_queue_pending") == 1
            and value(w, "jobprogress_jobs_in_progress") == 1
        )

    await eventually(running, "only the long job held by the worker, nothing waiting", timeout=30)
    w = await scrape(http, worker.url)
    # The cancelled job's entry was taken and acknowledged without running it.
    assert value(w, "jobprogress_jobs_finished_total", type="build", status="completed") == 2

    async with http.post(f"{queue}/api/jobs/{long_job}/cancel") as response:
        assert response.status == 202  # running: the worker ends it at its next step

    async def drained() -> Samples:
        q = await scrape(http, queue)
        w = await scrape(http, worker.url)
        done = (
            value(q, "jobprogress_queue_pending") == 0
            and value(w, "jobprogress_jobs_in_progress") == 0
            and value(w, "jobprogress_jobs_finished_total", type="import", status="cancelled") >= 1
        )
        return w if done else {}

    w = await eventually(drained, "the long job cancelled by the worker and acknowledged")
    assert value(w, "jobprogress_jobs_finished_total", type="import", status="cancelled") == 1


async def test_a_scrape_still_answers_when_redis_is_away(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    """The queue gauges come from Redis; without it a scrape still answers, with the rest."""
    stack = jobprogress_make_stack(services=("job-queue-service",))
    assert stack.redis is not None
    stack.redis.stop()
    try:
        q = await scrape(http, stack.url("job-queue-service"))
        assert value(q, "jobprogress_build_info", service="job-queue-service", version=__version__) == 1
    finally:
        stack.redis.start()
    assert "metrics: queue_counts failed" in stack.logs()


async def test_rare_methods_are_counted_as_other(
    jobprogress_stack: Stack, http: aiohttp.ClientSession
) -> None:
    """The page's routes take every method aiohttp's parser knows (some thirty, WebDAV's among
    them): the rare ones share one label value rather than a time series each."""
    progress = jobprogress_stack.url("progress-service")
    labels = {"service": "progress-service", "route": "/api/jobs", "method": "OTHER", "status": "405"}
    before = value(await scrape(http, progress), "jobprogress_http_requests_total", **labels)
    for name in ("PROPFIND", "MKCOL", "LOCK"):
        async with http.request(name, f"{progress}/api/jobs") as response:
            assert response.status == 405  # from job-queue-service, through the forward
    p = await scrape(http, progress)
    assert value(p, "jobprogress_http_requests_total", **labels) == before + 3
    assert not [key for key in p if ("method", "PROPFIND") in key[1]]


async def test_a_client_that_leaves_mid_stream_is_no_server_error(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    """Most streams end by their client leaving (a tab closed): that is neither a 500 in the
    request metrics nor a traceback in the log."""
    stack = jobprogress_make_stack()
    queue, progress = stack.url("job-queue-service"), stack.url("progress-service")
    route = {"service": "progress-service", "route": "/api/progress/{job_id}", "method": "GET"}
    for _ in range(2):  # one leaves while catching up or idle, one while live events pour in
        job_id = await submit_job(http, queue, type="build", steps=20, durationSeconds=4)
        response = await http.get(f"{progress}/api/progress/{job_id}")
        assert response.status == 200
        await response.content.readuntil(b"event: progress")
        response.close()  # the connection itself, as a closed tab does

    async def both_counted() -> Samples | None:
        samples = await scrape(http, progress)
        counted = sum(
            value(samples, "jobprogress_http_requests_total", **route, status=status)
            for status in ("200", "499", "500")
        )
        return samples if counted == 2 else None

    samples = await eventually(both_counted, "both streams counted once they ended")
    assert value(samples, "jobprogress_http_requests_total", **route, status="500") == 0
    assert value(samples, "jobprogress_sse_disconnects_total", reason="client_gone") == 2
    assert "unhandled error" not in stack.service("progress-service").log_tail(400)
