"""A job end to end: submitted over REST, run by a worker, streamed over SSE."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent as Received
from jobprogress_client import SseMessage
from jobprogress_client import collect_events as collect
from jobprogress_client import submit_job as submit
from jobprogress_core.model import parse_stream_id
from jobprogress_testing import Stack

pytestmark = pytest.mark.stack

SHORT_JOB = {"type": "build", "steps": 4, "durationSeconds": 2}


def assert_strictly_increasing(events: list[Received]) -> None:
    ids = [parse_stream_id(event.id) for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), [event.id for event in events]


async def test_short_job_streams_in_order_and_rest_matches(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, **SHORT_JOB)
    messages: list[SseMessage] = []
    events = await collect(http, f"{progress_url}/api/progress/{job_id}", messages=messages)

    retry = messages[0].retry
    assert retry is not None and 2000 <= retry <= 4000 and messages[0].event is None
    types = [event.event for event in events]
    assert types[0] == "status" and events[0].data["status"] == "QUEUED"
    assert types[1] == "status" and events[1].data["status"] == "PROCESSING"
    assert types[-1] == "complete"
    assert types.count("progress") == 4 and types.count("log") == 8
    assert [e.data["progress"] for e in events if e.event == "progress"] == [25, 50, 75, 100]
    assert_strictly_increasing(events)
    assert all(event.data["jobId"] == job_id and event.data["ts"] for event in events)

    async with http.get(f"{queue_url}/api/jobs/{job_id}") as response:
        job = await response.json()
    last = events[-1]
    assert job["status"] == last.data["status"] == "COMPLETED"
    assert job["progress"] == last.data["progress"] == 100
    assert job["result"] == last.data["result"]
    assert job["lastEventId"] == last.id
    assert job["attempts"] == 1 and job["finishedAt"]


async def test_reconnect_with_last_event_id_gets_exactly_the_rest(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, **SHORT_JOB)
    url = f"{progress_url}/api/progress/{job_id}"
    uninterrupted = asyncio.create_task(collect(http, url))

    first = await collect(http, url, stop_after=2)
    await asyncio.sleep(0.7)  # events happen while this client is away
    rest = await collect(http, url, last_event_id=first[-1].id)

    full = await uninterrupted
    assert first + rest == full
    assert rest and rest[-1].event == "complete"
    assert_strictly_increasing(first + rest)


async def test_last_event_id_query_parameter_resumes_like_the_header(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, steps=2, durationSeconds=0.5)
    url = f"{progress_url}/api/progress/{job_id}"
    full = await collect(http, url)
    resumed = await collect(http, f"{url}?lastEventId={full[2].id}")
    assert resumed == full[3:]


async def test_three_concurrent_clients_receive_identical_sequences(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, **SHORT_JOB)
    url = f"{progress_url}/api/progress/{job_id}"
    first, second, third = await asyncio.gather(collect(http, url), collect(http, url), collect(http, url))
    assert first == second == third
    assert first[-1].event == "complete"


async def test_job_told_to_fail_ends_failed(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, type="import", steps=3, durationSeconds=0.6, failAtStep=2)
    events = await collect(http, f"{progress_url}/api/progress/{job_id}")
    assert events[-1].event == "failed"
    assert events[-1].data["status"] == "FAILED"
    assert "Step 2/3" in events[-1].data["error"]
    assert [e.data["progress"] for e in events if e.event == "progress"] == [33]
    assert any(e.event == "log" and e.data["level"] == "error" for e in events)

    async with http.get(f"{queue_url}/api/jobs/{job_id}") as response:
        job = await response.json()
    assert job["status"] == "FAILED" and job["error"] == events[-1].data["error"]
    assert job["lastEventId"] == events[-1].id


async def test_finished_job_replays_whole_log_then_204_after_terminal(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, steps=1, durationSeconds=0.1)
    url = f"{progress_url}/api/progress/{job_id}"
    live = await collect(http, url)
    replay = await collect(http, url)  # a late page: no Last-Event-ID, gets everything
    assert replay == live

    async with http.get(url, headers={"Last-Event-ID": live[-1].id}) as response:
        assert response.status == 204
        assert await response.read() == b""
    # Resuming from before the terminal event still delivers it.
    assert await collect(http, url, last_event_id=live[-2].id) == live[-1:]


@pytest.mark.parametrize(
    "bad_id", ["abc", "1-", "-1", "1-2-3", "1.5-0", "123", "18446744073709551616-0", "0x1-0", "1-0;2"]
)
async def test_malformed_last_event_id_header_is_400_json_before_any_stream(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str, bad_id: str
) -> None:
    job_id = await submit(http, queue_url, steps=1, durationSeconds=0.1)
    async with http.get(
        f"{progress_url}/api/progress/{job_id}", headers={"Last-Event-ID": bad_id}
    ) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["error"]["code"] == "bad_request"
    assert "Last-Event-ID" in body["error"]["message"]


@pytest.mark.parametrize("bad_id", ["\u0661-0", "\uff11-0", "1-0\x00", "../1-0", "9" * 5000])
async def test_malformed_last_event_id_query_is_400(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str, bad_id: str
) -> None:
    job_id = await submit(http, queue_url, steps=1, durationSeconds=0.1)
    url = f"{progress_url}/api/progress/{job_id}"
    async with http.get(url, params={"lastEventId": bad_id}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_request"


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "..%2F..%2Fetc%2Fpasswd", "A" * 32, "x" * 5000])
async def test_unknown_job_is_404_json_before_any_stream(
    http: aiohttp.ClientSession, progress_url: str, job_id: str
) -> None:
    async with http.get(f"{progress_url}/api/progress/{job_id}") as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["error"]["code"] == "not_found"


async def test_heartbeat_comments_while_no_event(
    http: aiohttp.ClientSession, jobprogress_stack: Stack, queue_url: str
) -> None:
    progress = jobprogress_stack.start_service("progress-service", JOBPROGRESS_SSE_HEARTBEAT_SECONDS="0.2")
    try:
        job_id = await submit(http, queue_url, steps=1, durationSeconds=1.5)
        messages: list[SseMessage] = []
        events = await collect(http, f"{progress.url}/api/progress/{job_id}", messages=messages)
    finally:
        progress.stop()
    assert events[-1].event == "complete"
    pings = [message for message in messages if message.comment is not None]
    assert len(pings) >= 2 and all(ping.comment == "ping" for ping in pings)


async def test_stream_headers(http: aiohttp.ClientSession, queue_url: str, progress_url: str) -> None:
    job_id = await submit(http, queue_url, steps=1, durationSeconds=0.1)
    async with http.get(
        f"{progress_url}/api/progress/{job_id}", headers={"Accept-Encoding": "gzip, br"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in response.headers
        body = await response.read()
    retry = re.match(rb"retry: (\d+)\n\nid: ", body)
    assert retry and 2000 <= int(retry[1]) <= 4000  # drawn from the default range
