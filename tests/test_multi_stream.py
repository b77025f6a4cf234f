"""Many jobs on one stream (``GET /api/progress?job=...``, ``GET /api/progress/mine``), with
the test writing the jobs' events itself into the stack's Redis: every job's events in its
log's order, one compound ``Last-Event-ID`` resuming all of them exactly from any point, a
``reset`` per job whose position left its log, and the rules of single streams."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, SseMessage, collect_events, read_messages
from jobprogress_core.model import Event, EventType, Job
from jobprogress_core.store import JobStore
from jobprogress_core.tokens import new_identity
from jobprogress_testing import Stack, bearer_headers, eventually

pytestmark = pytest.mark.stack

NewJob = Callable[[], Awaitable[str]]


def jobs_url(progress_url: str, job_ids: list[str]) -> str:
    return f"{progress_url}/api/progress?" + "&".join(f"job={job_id}" for job_id in job_ids)


async def write_interleaved(store: JobStore, job_ids: list[str], rounds: int, seed: int = 1) -> None:
    """Log lines into the jobs in a random interleaving, then each job's terminal event."""
    rng = random.Random(seed)
    for n in range(rounds):
        job_id = rng.choice(job_ids)
        assert await store.append(job_id, EventType.LOG, {"line": f"line {n}"}) is not None
        if n % 25 == 0:
            await asyncio.sleep(0.005)
    for job_id in job_ids:
        await store.finish(job_id, EventType.COMPLETE, result="done")


async def logs_of(store: JobStore, job_ids: list[str]) -> dict[str, list[Event]]:
    return {job_id: await store.events(job_id, count=10_000) for job_id in job_ids}


def by_job(events: list[ReceivedEvent]) -> dict[str, list[tuple[str, object]]]:
    """Each job's events as (type, line or result), in the order received."""
    found: dict[str, list[tuple[str, object]]] = {}
    for event in events:
        found.setdefault(event.data["jobId"], []).append(
            (event.event, event.data.get("line", event.data.get("result")))
        )
    return found


def expected(logs: dict[str, list[Event]], after: dict[str, int]) -> dict[str, list[tuple[str, object]]]:
    """The log of each job after its first ``after[job]`` events (jobs with none left absent)."""
    found = {}
    for job_id, log in logs.items():
        rest = log[after.get(job_id, 0) :]
        if rest:
            found[job_id] = [(e.type.value, e.data.get("line", e.data.get("result"))) for e in rest]
    return found


async def test_one_stream_carries_every_job_in_its_logs_order_and_ends_after_the_last(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    job_ids = [await new_job() for _ in range(5)]
    url = jobs_url(progress_url, job_ids)
    reader = asyncio.create_task(collect_events(http, url, timeout=60))
    await write_interleaved(stack_store, job_ids, rounds=300)
    events = await reader
    logs = await logs_of(stack_store, job_ids)
    assert by_job(events) == expected(logs, {})
    assert len({event.id for event in events}) == len(events)  # every ID is new
    assert all(event.id.startswith("J") for event in events)

    async with http.get(url, headers={"Last-Event-ID": events[-1].id}) as response:
        assert response.status == 204  # every job has ended: EventSource stops


async def test_any_id_of_the_stream_resumes_every_job_exactly(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    job_ids = [await new_job() for _ in range(4)]
    url = jobs_url(progress_url, job_ids)
    reader = asyncio.create_task(collect_events(http, url, timeout=60))
    writer = asyncio.create_task(write_interleaved(stack_store, job_ids, rounds=200, seed=2))
    partial: list[ReceivedEvent] = []

    async def resume_while_writing() -> list[tuple[int, list[ReceivedEvent]]]:
        # Clients that resume mid-way, by header and by query, while events pour in.
        found = []
        for round_ in range(6):
            await asyncio.sleep(0.05)
            if len(partial) < 2:
                continue
            cut = random.Random(round_).randrange(len(partial))
            if round_ % 2:
                resumed = await collect_events(http, url, last_event_id=partial[cut].id, timeout=60)
            else:
                resumed = await collect_events(http, f"{url}&lastEventId={partial[cut].id}", timeout=60)
            found.append((cut, resumed))
        return found

    first = await collect_events(http, url, stop_after=60, timeout=60)
    partial.extend(first)
    resumed = await resume_while_writing()
    await writer
    full = await reader
    logs = await logs_of(stack_store, job_ids)
    assert by_job(full) == expected(logs, {})
    assert resumed, "no client resumed"
    for cut, events in [
        *resumed,
        (len(partial) - 1, await collect_events(http, url, last_event_id=partial[-1].id)),
    ]:
        seen: dict[str, int] = {}
        for event in partial[: cut + 1]:
            seen[event.data["jobId"]] = seen.get(event.data["jobId"], 0) + 1
        assert by_job(events) == expected(logs, seen)


async def test_a_job_whose_position_left_its_log_gets_a_reset_of_its_own(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    kept, trimmed = await new_job(), await new_job()
    url = jobs_url(progress_url, [kept, trimmed])
    for n in range(6):
        for job_id in (kept, trimmed):
            await stack_store.append(job_id, EventType.LOG, {"line": f"{job_id[:4]} {n}"})
    early = await collect_events(http, url, stop_after=9)  # one job's 7 events, the other's first 2
    assert {event.data["jobId"] for event in early} == {kept, trimmed}
    await stack_store.redis.xtrim(stack_store.keys.events(trimmed), maxlen=3, approximate=False)
    for job_id in (kept, trimmed):
        await stack_store.finish(job_id, EventType.COMPLETE, result="done")

    messages: list[SseMessage] = []
    events = await collect_events(http, url, last_event_id=early[-1].id, messages=messages)
    resets = [event for event in events if event.event == "reset"]
    assert [event.data["jobId"] for event in resets] == [trimmed]
    assert [m.id for m in messages if m.event == "reset"] == [None]
    assert resets[0].data["status"] == "COMPLETED"
    logs = await logs_of(stack_store, [kept, trimmed])
    seen = sum(1 for event in early if event.data["jobId"] == kept)
    after_reset = events[events.index(resets[0]) + 1 :]
    # The trimmed job: everything retained; the other: exactly what follows its position.
    assert by_job([e for e in after_reset if e.data["jobId"] == trimmed]) == expected(
        {trimmed: logs[trimmed]}, {}
    )
    assert by_job([e for e in events if e.data["jobId"] == kept]) == expected(
        {kept: logs[kept]}, {kept: seen}
    )


async def test_a_job_sent_to_its_end_may_expire_and_the_stream_still_resumes(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    done, running = await new_job(), await new_job()
    await stack_store.finish(done, EventType.COMPLETE, result="done")
    url = jobs_url(progress_url, [done, running])
    events = await collect_events(http, url, stop_after=3)  # done's two, running's first
    await stack_store.redis.delete(stack_store.keys.job(done), stack_store.keys.events(done))  # expired
    await stack_store.append(running, EventType.LOG, {"line": "later"})
    await stack_store.finish(running, EventType.COMPLETE, result="ok")
    rest = await collect_events(http, url, last_event_id=events[-1].id)
    assert [(e.data["jobId"], e.event) for e in rest] == [(running, "log"), (running, "complete")]


async def test_a_job_that_is_not_yours_refuses_the_whole_request_as_an_unknown_one_does(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    mine = await new_job()
    theirs = await new_job()
    await stack_store.redis.hset(stack_store.keys.job(theirs), "owner", new_identity())
    unknown = "0" * 32
    answers = {}
    for other in (theirs, unknown):
        async with http.get(jobs_url(progress_url, [mine, other])) as response:
            answers[other] = (response.status, (await response.json())["error"])
    assert answers[theirs][0] == answers[unknown][0] == 404
    assert answers[theirs][1]["message"] == answers[unknown][1]["message"].replace(unknown, theirs)
    assert mine not in answers[theirs][1]["message"]


@pytest.mark.parametrize(
    ("query", "last_event_id", "says"),
    [
        ("", None, "Name the jobs"),
        ("dup", None, "named twice"),
        ("many", None, "At most 50"),
        ("two", "J1:0,0,0", "another set of jobs"),
        ("two", "1732712345678-0", "Malformed"),
        ("two", "Jzz:0,!", "Malformed"),
        ("two", "M1:0:", "another kind"),
        ("two", "J1:" + "0," * 4040 + "0", "Malformed"),  # past 8000, within a header line
    ],
)
async def test_bad_requests_get_a_json_400_before_any_stream(
    new_job: NewJob,
    progress_url: str,
    http: aiohttp.ClientSession,
    query: str,
    last_event_id: str | None,
    says: str,
) -> None:
    one, two = await new_job(), await new_job()
    job_ids = {"": [], "dup": [one, one], "many": [one] * 51, "two": [one, two]}[query]
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with http.get(jobs_url(progress_url, job_ids), headers=headers) as response:
        assert response.status == 400
        assert says in (await response.json())["error"]["message"]


async def test_an_id_ahead_of_a_jobs_log_is_refused(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    one, two = await new_job(), await new_job()
    events = await collect_events(http, jobs_url(progress_url, [one, two]), stop_after=2)
    ahead = events[-1].id.rsplit(",", 1)[0] + ",zzzzzz"  # the second job far in the future
    async with http.get(jobs_url(progress_url, [one, two]), headers={"Last-Event-ID": ahead}) as response:
        assert response.status == 400
        assert "ahead" in (await response.json())["error"]["message"]


async def test_fifty_jobs_fit_in_a_short_id(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    job_ids = [await new_job() for _ in range(50)]
    for job_id in job_ids:
        for n in range(3):
            await stack_store.append(job_id, EventType.PROGRESS, {"progress": n})
    events = await collect_events(http, jobs_url(progress_url, job_ids), stop_after=200, timeout=60)
    assert len(events) == 200  # 50 jobs' QUEUED event and 3 progress events each
    longest = max(len(event.id) for event in events)
    assert longest <= 50 * 8 + 20, longest  # a few characters per job, not a full entry ID


async def test_mine_follows_unfinished_jobs_and_ones_submitted_after_it_opened(
    stack_store: JobStore,
    new_job: NewJob,
    progress_url: str,
    http: aiohttp.ClientSession,
) -> None:
    finished, running = await new_job(), await new_job()
    await stack_store.finish(finished, EventType.COMPLETE, result="old")
    url = f"{progress_url}/api/progress/mine"
    stream = asyncio.create_task(collect_events(http, url, stop_after=5, timeout=30))
    await asyncio.sleep(0.3)  # the stream is open (nothing of it depends on this pause)
    later = await new_job()
    await stack_store.append(running, EventType.LOG, {"line": "still going"})
    await stack_store.finish(later, EventType.COMPLETE, result="new")
    await stack_store.finish(running, EventType.COMPLETE, result="done")
    events = await stream
    logs = await logs_of(stack_store, [running, later])
    assert finished not in by_job(events)
    assert by_job(events) == expected(logs, {})
    assert all(event.id.startswith("M") for event in events)
    assert events[-1].id.endswith(":")  # both jobs left the stream with their terminal event

    # While nobody watches: a job submitted and finished, and one still running.
    gone, going = await new_job(), await new_job()
    await stack_store.finish(gone, EventType.FAILED, error="boom")
    resumed = await collect_events(http, url, last_event_id=events[-1].id, stop_after=3, timeout=30)
    logs = await logs_of(stack_store, [gone, going])
    assert by_job(resumed) == expected(logs, {})


async def test_mine_holds_only_the_callers_jobs(
    stack_store: JobStore, new_job: NewJob, progress_url: str, http: aiohttp.ClientSession
) -> None:
    someone = new_identity()
    async with aiohttp.ClientSession(headers=bearer_headers(someone)) as theirs:
        stream = asyncio.create_task(
            collect_events(theirs, f"{progress_url}/api/progress/mine", stop_after=2)
        )
        await asyncio.sleep(0.3)
        mine = await new_job()
        await stack_store.finish(mine, EventType.COMPLETE, result="mine")
        job = Job.new("build", {}, owner=someone)
        await stack_store.create(job, {"status": "QUEUED", "message": "theirs"})
        await stack_store.finish(job.id, EventType.COMPLETE, result="theirs")
        events = await stream
    assert [(event.data["jobId"], event.event) for event in events] == [
        (job.id, "status"),
        (job.id, "complete"),
    ]


async def test_mine_needs_an_identity(progress_url: str) -> None:
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{progress_url}/api/progress/mine") as response,
    ):
        assert response.status == 401
        assert response.content_type == "application/json"


async def test_a_slow_client_of_many_jobs_catches_up_from_the_log_and_resumes_across_ends(
    jobprogress_stack: Stack, stack_store: JobStore, new_job: NewJob, http: aiohttp.ClientSession
) -> None:
    progress = jobprogress_stack.start_service(
        "progress-service",
        JOBPROGRESS_SSE_BUFFER_BYTES="16384",
        JOBPROGRESS_SSE_QUEUE_SIZE="8",
        JOBPROGRESS_SSE_SEND_TIMEOUT="30",
        JOBPROGRESS_SSE_MAX_LIFETIME="3",
        JOBPROGRESS_SSE_HEARTBEAT_SECONDS="0.3",
    )
    job_ids = [await new_job() for _ in range(3)]
    url = jobs_url(progress.url, job_ids)
    line = "x" * 8000
    try:
        messages: list[SseMessage] = []
        async with aiohttp.ClientSession(headers=http.headers, read_bufsize=16384) as slow:
            response = await slow.get(url)
            assert response.status == 200
            await response.content.readuntil(b"\n\n")  # retry: then stop reading for a while
            for n in range(1500):  # 12 MB, far past what the sockets and 16 KiB hold
                await stack_store.append(job_ids[n % 3], EventType.LOG, {"line": f"{n} {line}"})
            for job_id in job_ids:
                await stack_store.finish(job_id, EventType.COMPLETE, result="done")
            received: list[ReceivedEvent] = []
            async for message in read_messages(response):
                messages.append(message)
                if message.event is not None and message.data is not None:
                    received.append(ReceivedEvent(message.id or "", message.event, json.loads(message.data)))
            response.close()
        while received[-1].id and not await _all_done(http, url, received[-1].id):
            received += await collect_events(
                http, url, last_event_id=received[-1].id, messages=messages, timeout=30
            )
        logs = await logs_of(stack_store, job_ids)
        assert by_job(received) == expected(logs, {})
        assert all(m.id is None for m in messages if m.comment is not None)  # heartbeats carry no ID

        async def overflows() -> float:
            async with http.get(f"{progress.url}/metrics") as metrics:
                found = re.search(r"^jobprogress_sse_overflows_total (\S+)", await metrics.text(), re.M)
            return float(found.group(1)) if found else 0.0

        assert await eventually(overflows, "the slow client fell behind at least once") >= 1

        async def timed() -> float:
            async with http.get(f"{progress.url}/metrics") as metrics:
                found = re.search(
                    r"^jobprogress_sse_delivery_latency_seconds_count (\S+)", await metrics.text(), re.M
                )
            return float(found.group(1)) if found else 0.0

        # The events the hub wrote live to the stream of many jobs are timed as a single stream's.
        assert await eventually(timed, "live events of a stream of many jobs timed") >= 1

        async def readers_left() -> bool:
            async with http.get(f"{progress.url}/metrics") as metrics:
                return "\njobprogress_hub_reader_connections 0.0\n" in await metrics.text()

        # Every stream has ended: no job is followed any more, so no reader is left.
        await eventually(readers_left, "the hub's readers gone with the last stream")
    finally:
        progress.stop()


async def _all_done(http: aiohttp.ClientSession, url: str, last_event_id: str) -> bool:
    async with http.get(url, headers={"Last-Event-ID": last_event_id}) as response:
        return response.status == 204


async def test_a_stopping_instance_ends_the_stream_and_another_resumes_it_exactly(
    jobprogress_stack: Stack, stack_store: JobStore, new_job: NewJob, http: aiohttp.ClientSession
) -> None:
    first = jobprogress_stack.start_service("progress-service")
    job_ids = [await new_job() for _ in range(3)]
    for n in range(30):
        await stack_store.append(job_ids[n % 3], EventType.LOG, {"line": f"before {n}"})
    stream = asyncio.create_task(collect_events(http, f"{first.url}/api/progress/mine", timeout=60))

    async def events_sent() -> float:
        async with http.get(f"{first.url}/metrics") as response:
            text = await response.text()
        return sum(
            float(n) for n in re.findall(r"^jobprogress_sse_events_sent_total\{[^}]*\} (\S+)", text, re.M)
        )

    await eventually(lambda: _at_least(events_sent, 33), "the stream caught up with the 33 events")
    first.stop()  # SIGTERM: the instance ends its streams gracefully
    received = await stream
    assert len(received) == 33
    second = jobprogress_stack.start_service("progress-service")
    try:
        for n in range(30):
            await stack_store.append(job_ids[n % 3], EventType.LOG, {"line": f"after {n}"})
        for job_id in job_ids:
            await stack_store.finish(job_id, EventType.COMPLETE, result="done")
        received += await collect_events(
            http, f"{second.url}/api/progress/mine", last_event_id=received[-1].id, stop_after=33, timeout=60
        )
        assert by_job(received) == expected(await logs_of(stack_store, job_ids), {})
    finally:
        second.stop()


async def _at_least(count: Callable[[], Awaitable[float]], floor: float) -> bool:
    return await count() >= floor
