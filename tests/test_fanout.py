"""Fan-out at scale and stream lifecycle, against dedicated progress-service instances:
constant Redis connections, a stalled client cut off without delaying others, the per-process
stream limit, idle timeout and maximum lifetime."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, collect_events, read_messages
from jobprogress_core.model import EventType
from jobprogress_core.store import JobStore
from jobprogress_testing import ServiceProcess, Stack, eventually

pytestmark = pytest.mark.stack

NewJob = Callable[[], Awaitable[str]]


async def redis_connections_of(store: JobStore, process: ServiceProcess, role: str = "") -> int:
    """Connections the process holds (those named ``<service>:<pid>[:role]``; of one role if given)."""
    name = f"progress-service:{process.pid}"
    clients = await store.redis.client_list()
    return sum(
        1
        for client in clients
        if client.get("name", "").startswith(name) and (not role or client.get("name") == f"{name}:{role}")
    )


async def open_stream(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    response = await http.get(url)
    assert response.status == 200
    await response.content.readuntil(b"\n\n")  # the retry: line: the stream is live
    return response


async def next_event(response: aiohttp.ClientResponse) -> ReceivedEvent:
    async for message in read_messages(response):
        if message.event is not None and message.data is not None:
            return ReceivedEvent(message.id or "", message.event, json.loads(message.data))
    raise AssertionError("stream ended")


async def test_redis_connections_stay_bounded_from_10_to_500_subscribers(
    jobprogress_stack: Stack, stack_store: JobStore, new_job: NewJob, http: aiohttp.ClientSession
) -> None:
    pool = 4
    progress = jobprogress_stack.start_service("progress-service", JOBPROGRESS_REDIS_POOL_SIZE=str(pool))
    jobs = [await new_job() for _ in range(50)]
    partitions = len({stack_store.keys.partition_of(job_id) for job_id in jobs})
    counts, readers = {}, {}
    streams: list[tuple[str, aiohttp.ClientResponse]] = []
    try:
        for total in (10, 500):
            while len(streams) < total:
                batch = [jobs[n % len(jobs)] for n in range(len(streams), min(total, len(streams) + 100))]
                opened = await asyncio.gather(
                    *(open_stream(http, f"{progress.url}/api/progress/{job_id}") for job_id in batch)
                )
                streams += list(zip(batch, opened, strict=True))
            counts[total] = await redis_connections_of(stack_store, progress)
            readers[total] = await redis_connections_of(stack_store, progress, "hub-reader")
        # One event per job now reaches every one of the 500 subscribers.
        for job_id in jobs:
            await stack_store.append(job_id, EventType.LOG, {"line": f"hello {job_id}"})
        for job_id, response in streams:
            async with asyncio.timeout(10):
                event = await next_event(response)
                assert event.event == "status"  # the job's first event (the log from the start)
                event = await next_event(response)
                assert event.data["line"] == f"hello {job_id}"
    finally:
        for _, response in streams:
            response.close()
        progress.stop()
    # The pool (4) plus one hub reader per partition with subscribers (at most the 16
    # partitions), whatever the number of subscribers.
    bound = pool + stack_store.keys.partitions
    assert 1 <= counts[10] <= bound and 1 <= counts[500] <= bound, counts
    first_ten = len({stack_store.keys.partition_of(job_id) for job_id in jobs[:10]})
    assert 1 <= readers[10] <= first_ten and 1 <= readers[500] <= partitions, readers


async def test_a_stalled_client_is_cut_off_while_others_get_every_event(
    jobprogress_stack: Stack, stack_store: JobStore, new_job: NewJob, http: aiohttp.ClientSession
) -> None:
    progress = jobprogress_stack.start_service(
        "progress-service", JOBPROGRESS_SSE_SEND_TIMEOUT="1", JOBPROGRESS_SSE_QUEUE_SIZE="16"
    )
    job_id = await new_job()
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills at once
    stalled.setblocking(False)
    await asyncio.get_running_loop().sock_connect(stalled, ("127.0.0.1", progress.port))
    reader, writer = await asyncio.open_connection(sock=stalled)
    authorization = http.headers["Authorization"]
    writer.write(
        f"GET /api/progress/{job_id} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n\r\n".encode()
    )
    await writer.drain()
    assert b"\nretry: " in await reader.readuntil(b"\n\n")  # then never read again
    try:
        follower = asyncio.create_task(
            collect_events(http, f"{progress.url}/api/progress/{job_id}", timeout=60)
        )
        line = "x" * 8000
        for n in range(1500):  # about 12 MB: far more than the socket buffers hold
            await stack_store.append(job_id, EventType.LOG, {"line": f"{n} {line}"})
        await stack_store.finish(job_id, EventType.COMPLETE, result="ok")
        events = await follower
        assert len(events) == 1 + 1500 + 1 and events[-1].event == "complete"
        log = await stack_store.events(job_id, count=5000)
        assert [e.id for e in events] == [e.id for e in log]  # nothing lost, nothing twice, in order

        async def cut_off() -> float:
            async with http.get(f"{progress.url}/metrics") as response:
                found = re.search(r'_disconnects_total\{reason="send_timeout"\} (\S+)', await response.text())
            return float(found.group(1)) if found else 0.0

        # The stalled stream is cut at its first write that cannot finish.
        assert await eventually(cut_off, "the stalled client disconnected") == 1
    finally:
        writer.close()
        progress.stop()


async def test_the_per_process_stream_limit_answers_503_with_retry_after(
    jobprogress_stack: Stack, new_job: NewJob, http: aiohttp.ClientSession
) -> None:
    progress = jobprogress_stack.start_service("progress-service", JOBPROGRESS_MAX_STREAMS="3")
    job_id = await new_job()
    url = f"{progress.url}/api/progress/{job_id}"
    try:
        held = [await open_stream(http, url) for _ in range(3)]
        async with http.get(url) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert (await response.json())["error"]["code"] == "service_unavailable"
        held.pop().close()

        async def place_given_back() -> bool:
            async with http.get(url) as response:
                return response.status == 200

        await eventually(place_given_back, "the closed stream's place given back")
        for stream in held:
            stream.close()
    finally:
        progress.stop()


async def test_idle_and_overlong_streams_end_and_clients_resume_without_loss(
    jobprogress_stack: Stack, stack_store: JobStore, new_job: NewJob, http: aiohttp.ClientSession
) -> None:
    progress = jobprogress_stack.start_service(
        "progress-service",
        JOBPROGRESS_SSE_IDLE_TIMEOUT="2",
        JOBPROGRESS_SSE_MAX_LIFETIME="3",
        JOBPROGRESS_SSE_HEARTBEAT_SECONDS="0.3",
    )
    job_id = await new_job()
    url = f"{progress.url}/api/progress/{job_id}"
    try:
        # Idle: no event for two seconds ends the stream, though the job goes on.
        idle = await collect_events(http, url, timeout=10)
        assert [e.event for e in idle] == ["status"]

        # Too long: events every 0.25 s keep it from idling; it still ends after 3 s.
        async def produce() -> None:
            for n in range(28):
                await stack_store.append(job_id, EventType.LOG, {"line": str(n)})
                await asyncio.sleep(0.25)
            await stack_store.finish(job_id, EventType.COMPLETE, result="ok")

        producer = asyncio.create_task(produce())
        received = list(idle)
        sessions = 0
        while not received or received[-1].event != "complete":
            received += await collect_events(http, url, last_event_id=received[-1].id, timeout=10)
            sessions += 1
        await producer
        assert sessions >= 2  # the lifetime limit ended at least one stream early
        log = await stack_store.events(job_id, count=1000)
        assert [e.id for e in received] == [e.id for e in log]
        async with http.get(f"{progress.url}/metrics") as response:
            metrics = await response.text()
        assert 'reason="idle_timeout"' in metrics and 'reason="max_lifetime"' in metrics
    finally:
        progress.stop()
