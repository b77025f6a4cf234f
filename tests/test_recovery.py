"""Jobs that survive: workers killed and stopped for real, cancellation, time limits,
retention, and Redis restarted under a running job with a client attached."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, collect_events, submit_job
from jobprogress_core.keys import Keys
from jobprogress_core.model import parse_stream_id
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_testing import ServiceProcess, Stack, eventually, http_get

pytestmark = pytest.mark.stack

FAST = {"JOBPROGRESS_VISIBILITY_TIMEOUT": "1.5", "JOBPROGRESS_WORKER_BLOCK_MS": "300"}
FRONT = ("job-queue-service", "progress-service")


async def job_state(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> dict[str, Any]:
    async with http.get(f"{stack.url('job-queue-service')}/api/jobs/{job_id}") as response:
        assert response.status == 200
        return dict(await response.json())


async def wait_for(
    http: aiohttp.ClientSession,
    stack: Stack,
    job_id: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 30,
) -> dict[str, Any]:
    """The job's state over REST once ``check`` holds for it; fails naming ``what`` if it never does."""

    async def state_if_checked() -> dict[str, Any]:
        state = await job_state(http, stack, job_id)
        return state if check(state) else {}

    return await eventually(state_if_checked, f"job {job_id} {what}", timeout=timeout)


def assert_exact_log(events: list[ReceivedEvent], log: list[str]) -> None:
    ids = [event.id for event in events]
    assert ids == log, "the client's sequence differs from the job's log"
    parsed = [parse_stream_id(i) for i in ids]
    assert parsed == sorted(set(parsed))


async def stream_log(stack: Stack, job_id: str) -> list[str]:
    assert stack.redis_url is not None
    redis = create_redis(Settings.from_env("progress-service", {"REDIS_URL": stack.redis_url}))
    try:
        return [entry_id for entry_id, _ in await redis.xrange(Keys().events(job_id))]
    finally:
        await redis.aclose()


async def test_sigkill_mid_job_another_worker_reclaims_and_completes(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(FRONT, **FAST)
    doomed = stack.start_service("worker-service")
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=4, durationSeconds=4)
    url = f"{stack.url('progress-service')}/api/progress/{job_id}"
    watcher = asyncio.create_task(collect_events(http, url, timeout=60))
    await wait_for(http, stack, job_id, lambda s: s["step"] >= 1, "past its first step")
    survivor = stack.start_service("worker-service")
    doomed.kill()  # SIGKILL: no goodbye, no hand-back

    events = await watcher
    state = await job_state(http, stack, job_id)
    assert state["status"] == "COMPLETED" and state["attempts"] == 2
    assert events[-1].event == "complete"
    reclaims = [e for e in events if e.event == "status" and e.data["message"].startswith("Reclaimed by")]
    assert len(reclaims) == 1 and reclaims[0].data["attempt"] == 2
    steps = [e.data["step"] for e in events if e.event == "progress"]
    assert steps == [1, 2, 3, 4]  # continued after the last reported step, nothing twice
    assert_exact_log(events, await stream_log(stack, job_id))
    assert survivor.running


async def test_a_live_worker_keeps_its_long_job(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    # The job runs four times longer than the visibility timeout, with a second worker eager
    # to reclaim: the running worker's fresh claims must keep it.
    stack = jobprogress_make_stack(FRONT, **FAST)
    stack.start_service("worker-service")
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=3, durationSeconds=6)
    await wait_for(http, stack, job_id, lambda s: s["status"] == "PROCESSING", "running")
    stack.start_service("worker-service")
    events = await collect_events(http, f"{stack.url('progress-service')}/api/progress/{job_id}", timeout=30)
    assert events[-1].event == "complete"
    assert not any(e.event == "status" and "Reclaimed" in e.data["message"] for e in events)
    assert (await job_state(http, stack, job_id))["attempts"] == 1


async def test_attempt_limit_ends_the_job_failed_with_the_reason(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(FRONT, JOBPROGRESS_MAX_ATTEMPTS="2", **FAST)
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=2, durationSeconds=60)
    for attempt in (1, 2):
        worker = stack.start_service("worker-service")
        await wait_for(
            http,
            stack,
            job_id,
            lambda s, n=attempt: s["attempts"] == n and s["status"] == "PROCESSING",
            f"running its attempt {attempt}",
        )
        worker.kill()
    stack.start_service("worker-service")
    state = await wait_for(http, stack, job_id, lambda s: s["status"] == "FAILED", "failed")
    assert state["status"] == "FAILED" and state["attempts"] == 2
    assert state["error"].startswith("Gave up after 2 attempts")


async def test_sigterm_hands_a_running_job_to_another_worker_at_once(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    # A long visibility timeout: the job can only move on this quickly by being handed back.
    stack = jobprogress_make_stack(
        FRONT, JOBPROGRESS_VISIBILITY_TIMEOUT="600", JOBPROGRESS_WORKER_BLOCK_MS="300"
    )
    leaving = stack.start_service("worker-service", JOBPROGRESS_GRACE_SECONDS="0.5")
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=4, durationSeconds=4)
    url = f"{stack.url('progress-service')}/api/progress/{job_id}"
    watcher = asyncio.create_task(collect_events(http, url, timeout=60))
    await wait_for(http, stack, job_id, lambda s: s["step"] >= 1, "past its first step")
    stack.start_service("worker-service")
    assert await asyncio.to_thread(leaving.stop) == 0
    assert "1 handed back" in leaving.log_tail()  # and not reclaimed: the job ends long before 600 s

    events = await watcher
    state = await job_state(http, stack, job_id)
    assert state["status"] == "COMPLETED" and state["attempts"] == 1  # a hand-back is no failure
    assert any(e.event == "status" and e.data["message"].startswith("Handed back") for e in events)
    assert [e.data["step"] for e in events if e.event == "progress"] == [1, 2, 3, 4]
    assert_exact_log(events, await stream_log(stack, job_id))
    assert stack.consul is not None
    assert all(entry["Service"]["Port"] != leaving.port for entry in stack.consul.health("worker-service"))


async def test_sigterm_lets_a_short_job_finish_within_the_grace_period(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(FRONT, **FAST)
    worker = stack.start_service("worker-service", JOBPROGRESS_GRACE_SECONDS="20")
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=2, durationSeconds=2)
    await wait_for(http, stack, job_id, lambda s: s["status"] == "PROCESSING", "running")
    assert await asyncio.to_thread(worker.stop) == 0
    state = await job_state(http, stack, job_id)
    assert state["status"] == "COMPLETED" and state["attempts"] == 1
    assert "1 finished in the grace period, 0 handed back" in worker.log_tail()


async def cancel(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{stack.url('progress-service')}/api/jobs/{job_id}/cancel") as response:
        return response.status, dict(await response.json())


async def test_cancel_mid_job_twice_and_after_completion(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(**FAST)
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=3, durationSeconds=30)
    url = f"{stack.url('progress-service')}/api/progress/{job_id}"
    watcher = asyncio.create_task(collect_events(http, url, timeout=30))
    await wait_for(http, stack, job_id, lambda s: s["status"] == "PROCESSING", "running")
    first = await cancel(http, stack, job_id)
    second = await cancel(http, stack, job_id)
    assert first[0] == 202 and first[1]["cancelRequested"] is True
    assert second[0] in (200, 202)

    events = await watcher  # ends at the next cancellation check, long before the job would
    assert events[-1].event == "cancelled" and events[-1].data["status"] == "CANCELLED"
    assert sum(1 for e in events if e.event == "log" and e.data["line"] == "Cancellation requested") == 1
    state = await job_state(http, stack, job_id)
    assert state["status"] == "CANCELLED" and state["finishedAt"]
    assert (await cancel(http, stack, job_id))[0] == 200  # still idempotent once cancelled

    done_id = await submit_job(http, stack.url("job-queue-service"), steps=1, durationSeconds=0.1)
    await wait_for(http, stack, done_id, lambda s: s["status"] == "COMPLETED", "completed")
    status, body = await cancel(http, stack, done_id)
    assert status == 409 and body["error"]["code"] == "conflict"
    async with http.post(f"{stack.url('progress-service')}/api/jobs/{'0' * 32}/cancel") as response:
        assert response.status == 404


async def test_cancelling_a_queued_job_ends_it_at_once(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(FRONT)  # no worker: the job stays queued
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=1, durationSeconds=1)
    status, body = await cancel(http, stack, job_id)
    assert status == 200 and body["status"] == "CANCELLED"
    events = await collect_events(http, f"{stack.url('progress-service')}/api/progress/{job_id}")
    assert [e.event for e in events] == ["status", "cancelled"]
    worker = stack.start_service("worker-service")
    await eventually(
        lambda: "is CANCELLED; acknowledging" in worker.log_tail(), "the worker's look at the job"
    )
    assert (await job_state(http, stack, job_id))["status"] == "CANCELLED"  # never started


async def test_time_limit_fails_an_overrunning_job(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(**FAST)
    job_id = await submit_job(
        http, stack.url("job-queue-service"), steps=2, durationSeconds=30, timeLimitSeconds=1
    )
    events = await collect_events(http, f"{stack.url('progress-service')}/api/progress/{job_id}", timeout=20)
    assert events[-1].event == "failed"
    assert events[-1].data["error"] == "Time limit of 1s exceeded"
    assert (await job_state(http, stack, job_id))["status"] == "FAILED"


async def test_retention_ttl_capped_streams_short_queue_and_paginated_history(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession, jobprogress_identity: str
) -> None:
    stack = jobprogress_make_stack(
        JOBPROGRESS_RETENTION_SECONDS="120", JOBPROGRESS_EVENT_STREAM_MAXLEN="100", **FAST
    )
    queue = stack.url("job-queue-service")
    big = await submit_job(http, queue, steps=100, durationSeconds=0.5)
    small = [await submit_job(http, queue, steps=1, durationSeconds=0.1) for _ in range(4)]
    for job_id in [big, *small]:
        await wait_for(http, stack, job_id, lambda s: s["status"] == "COMPLETED", "completed")

    assert stack.redis_url is not None
    redis = create_redis(Settings.from_env("job-queue-service", {"REDIS_URL": stack.redis_url}))
    keys = Keys()
    try:
        for job_id in [big, *small]:
            assert 0 < await redis.ttl(keys.job(job_id)) <= 120
            assert 0 < await redis.ttl(keys.events(job_id)) <= 120
        assert 100 <= await redis.xlen(keys.events(big)) < 200  # 300 events written, capped

        async def queue_emptied() -> bool:
            return sum([await redis.xlen(keys.queue(shard)) for shard in range(keys.partitions)]) == 0

        # Acknowledged entries are deleted, by the worker after it wrote the job's end.
        await eventually(queue_emptied, "every queue entry acknowledged and deleted")

        pages: list[list[str]] = []
        url: str | None = f"{queue}/api/jobs?limit=2"
        while url is not None:
            async with http.get(url) as response:
                assert response.status == 200
                body = await response.json()
            pages.append([job["jobId"] for job in body["jobs"]])
            url = f"{queue}{body['next']}" if body["next"] else None
        # Newest first; jobs created in the same millisecond (one submission after another
        # can be that quick) by id, the history's order for a tie.
        created = {job_id: await redis.hget(keys.job(job_id), "created_at") for job_id in [big, *small]}
        newest_first = sorted(created, key=lambda job_id: (created[job_id], job_id), reverse=True)
        assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]

        await redis.delete(keys.job(small[2]))  # as if it had expired
        async with http.get(f"{queue}/api/jobs?limit=10") as response:
            listed = [job["jobId"] for job in (await response.json())["jobs"]]
        assert listed == [job_id for job_id in newest_first if job_id != small[2]]
        assert await redis.zscore(keys.history(jobprogress_identity), small[2]) is None  # pruned
        assert await redis.ttl(keys.history(jobprogress_identity)) > 0
        async with http.get(f"{queue}/api/jobs?limit=0&before=nonsense") as response:
            assert response.status == 422
            assert set((await response.json())["error"]["details"]) == {"limit", "before"}
    finally:
        await redis.aclose()


async def test_redis_restart_mid_job_loses_nothing(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(persistent_redis=True, **FAST)
    assert stack.redis is not None
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=6, durationSeconds=6)
    url = f"{stack.url('progress-service')}/api/progress/{job_id}"
    watcher = asyncio.create_task(collect_events(http, url, timeout=60))
    await wait_for(http, stack, job_id, lambda s: s["step"] >= 1, "past its first step")

    down = threading.Event()
    seen: dict[str, list[int]] = {process.service: [] for process in stack.services}

    def poll_health(process: ServiceProcess) -> None:
        while not down.is_set():
            try:
                status = http_get(f"{process.url}/health", timeout=3)[0]
            except OSError:
                continue
            seen[process.service].append(status)
            time.sleep(0.05)

    def down_and_back(service: str) -> bool:
        statuses = list(seen[service])
        return 503 in statuses and 200 in statuses[statuses.index(503) :]

    pollers = [threading.Thread(target=poll_health, args=(process,)) for process in stack.services]
    for poller in pollers:
        poller.start()
    try:
        await asyncio.to_thread(stack.redis.restart, 3.0)
        await eventually(
            lambda: all(down_and_back(service) for service in seen),
            "every service unhealthy while Redis was away, then healthy again",
        )
    finally:
        down.set()
        for poller in pollers:
            poller.join()

    events = await watcher
    assert events[-1].event == "complete"
    assert [e.data["step"] for e in events if e.event == "progress"] == [1, 2, 3, 4, 5, 6]
    assert_exact_log(events, await stream_log(stack, job_id))
    assert (await job_state(http, stack, job_id))["status"] == "COMPLETED"
    for service in ("job-queue-service", "worker-service", "progress-service"):
        assert {200, 503} <= set(seen[service]), (service, seen)
        assert http_get(f"{stack.url(service)}/health")[0] == 200
