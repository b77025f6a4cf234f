"""Stopping a progress-service instance: its streams end at once, it leaves Consul, and
clients resume on another instance without losing or repeating an event."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, SseMessage, collect_events, submit_job
from jobprogress_testing import Stack, eventually

pytestmark = pytest.mark.stack


async def test_graceful_stop_closes_streams_and_clients_resume_elsewhere(
    jobprogress_stack: Stack, http: aiohttp.ClientSession
) -> None:
    queue = jobprogress_stack.url("job-queue-service")
    steady = jobprogress_stack.url("progress-service")
    leaving = jobprogress_stack.start_service("progress-service")
    job_id = await submit_job(http, queue, steps=5, durationSeconds=4)
    path = f"/api/progress/{job_id}"
    reference = asyncio.create_task(collect_events(http, f"{steady}{path}"))

    received: list[ReceivedEvent] = []
    arrived: list[SseMessage] = []

    async def follow_leaving_instance() -> None:
        received.extend(await collect_events(http, f"{leaving.url}{path}", messages=arrived))

    follower = asyncio.create_task(follow_leaving_instance())
    # Stopped mid-stream: once the follower has its first event from the leaving instance.
    await eventually(lambda: follower.done() or any(m.event for m in arrived), "the follower's first event")
    stop = asyncio.create_task(asyncio.to_thread(leaving.stop))
    async with asyncio.timeout(30):
        await follower
    assert await stop == 0
    # It ended at the stop, not when the job did: its last event is not the job's last.
    assert received and received[-1].event not in ("complete", "failed", "cancelled")

    consul = jobprogress_stack.consul
    assert consul is not None
    assert all(entry["Service"]["Port"] != leaving.port for entry in consul.health("progress-service"))

    rest = await collect_events(http, f"{steady}{path}", last_event_id=received[-1].id)
    assert received + rest == await reference
    assert rest[-1].event == "complete"
