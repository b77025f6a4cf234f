"""The stream's edges, with the test writing events itself into the stack's Redis: clients
joining while events pour in, trimmed history (`reset`), IDs ahead of the log."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, SseMessage, collect_events
from jobprogress_core.event_data import metric_data, step_data
from jobprogress_core.model import EventType
from jobprogress_core.store import JobStore

pytestmark = pytest.mark.stack


async def test_clients_joining_while_events_pour_in_get_exactly_the_log(
    stack_store: JobStore,
    new_job: Callable[[], Awaitable[str]],
    progress_url: str,
    http: aiohttp.ClientSession,
) -> None:
    job_id = await new_job()
    url = f"{progress_url}/api/progress/{job_id}"
    written: list[str] = []

    async def writer() -> None:
        for n in range(400):
            event = await stack_store.append(job_id, EventType.LOG, {"line": f"line {n}"})
            assert event is not None
            written.append(event.id)
            if n % 20 == 0:
                await asyncio.sleep(0.01)
        await stack_store.finish(job_id, EventType.COMPLETE, result="done")

    rng = random.Random(7)

    async def client(delay: float) -> tuple[str | None, list[ReceivedEvent]]:
        await asyncio.sleep(delay)
        start = rng.choice([None, *written[-5:]]) if written else None
        return start, await collect_events(http, url, last_event_id=start, timeout=60)

    results = await asyncio.gather(writer(), *(client(rng.uniform(0, 0.6)) for _ in range(30)))
    log = await stack_store.events(job_id, count=10_000)
    for start, events in results[1:]:  # type: ignore[misc]
        expected = log[[e.id for e in log].index(start) + 1 :] if start else log
        assert [e.id for e in events] == [e.id for e in expected]
        assert events[-1].event == "complete"


async def test_trimmed_history_starts_with_a_reset_snapshot(
    stack_store: JobStore,
    new_job: Callable[[], Awaitable[str]],
    progress_url: str,
    http: aiohttp.ClientSession,
) -> None:
    job_id = await new_job()
    old = [await stack_store.append(job_id, EventType.LOG, {"line": str(n)}) for n in range(10)]
    await stack_store.redis.xtrim(stack_store.keys.events(job_id), maxlen=4, approximate=False)
    retained = await stack_store.events(job_id)
    await stack_store.finish(job_id, EventType.FAILED, error="boom")
    assert old[2] is not None and len(retained) == 4

    messages: list[SseMessage] = []
    events = await collect_events(
        http, f"{progress_url}/api/progress/{job_id}", last_event_id=old[2].id, messages=messages
    )
    assert events[0].event == "reset"
    reset = next(m for m in messages if m.event == "reset")
    assert reset.id is None  # the client keeps its own last ID until a real event arrives
    assert events[0].data["jobId"] == job_id and events[0].data["status"] == "FAILED"
    assert events[0].data["error"] == "boom"
    assert [e.id for e in events[1:]] == [e.id for e in retained] + [events[-1].id]
    assert events[-1].event == "failed"


async def test_a_reset_snapshot_holds_the_steps_and_the_latest_metrics(
    stack_store: JobStore,
    new_job: Callable[[], Awaitable[str]],
    progress_url: str,
    http: aiohttp.ClientSession,
) -> None:
    job_id = await new_job()
    first = await stack_store.append(job_id, EventType.STEP, step_data("fetch", "running", name="Fetch"))
    await stack_store.append(job_id, EventType.METRIC, metric_data({"rows": 10.0}, step=1))
    await stack_store.append(job_id, EventType.STEP, step_data("fetch", "completed", name="Fetch"))
    await stack_store.append(job_id, EventType.METRIC, metric_data({"rows": 25.0}, step=2))
    await stack_store.redis.xtrim(stack_store.keys.events(job_id), maxlen=1, approximate=False)
    await stack_store.finish(job_id, EventType.COMPLETE, result="done")
    assert first is not None
    events = await collect_events(http, f"{progress_url}/api/progress/{job_id}", last_event_id=first.id)
    assert events[0].event == "reset"
    assert events[0].data["steps"] == [{"stepId": "fetch", "name": "Fetch", "status": "completed"}]
    assert events[0].data["metrics"] == {"rows": {"value": 25, "step": 2}}


@pytest.mark.parametrize("ahead", ["99999999999999-0", "18446744073709551615-18446744073709551615"])
async def test_an_id_ahead_of_the_log_is_400(
    new_job: Callable[[], Awaitable[str]], progress_url: str, http: aiohttp.ClientSession, ahead: str
) -> None:
    job_id = await new_job()
    async with http.get(
        f"{progress_url}/api/progress/{job_id}", headers={"Last-Event-ID": ahead}
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_request"


async def test_a_storm_of_connects_to_several_jobs_gets_each_client_its_log_and_exact_resume(
    stack_store: JobStore,
    new_job: Callable[[], Awaitable[str]],
    progress_url: str,
    http: aiohttp.ClientSession,
) -> None:
    """Streams opening all at once share their Redis reads (one pipeline per turn of the
    loop): each still gets its own job's log, from its own Last-Event-ID, exactly once."""
    jobs = [await new_job() for _ in range(4)]
    early: dict[str, list[str]] = {job_id: [] for job_id in jobs}
    for n in range(10):
        for job_id in jobs:
            event = await stack_store.append(job_id, EventType.LOG, {"line": f"early {n}"})
            assert event is not None
            early[job_id].append(event.id)
    rng = random.Random(11)
    starts = [(job_id, rng.choice([None, *early[job_id]])) for job_id in jobs for _ in range(30)]

    async def writer() -> None:
        for n in range(10):
            for job_id in jobs:
                await stack_store.append(job_id, EventType.LOG, {"line": f"late {n}"})
        for job_id in jobs:
            await stack_store.finish(job_id, EventType.COMPLETE, result="done")

    clients = [
        collect_events(http, f"{progress_url}/api/progress/{job_id}", last_event_id=start, timeout=60)
        for job_id, start in starts
    ]
    _, *seen = await asyncio.gather(writer(), *clients)
    logs = {job_id: [e.id for e in await stack_store.events(job_id, count=10_000)] for job_id in jobs}
    for (job_id, start), events in zip(starts, seen, strict=True):
        log = logs[job_id]
        expected = log[log.index(start) + 1 :] if start else log
        assert [e.id for e in events] == expected
        assert {e.data["jobId"] for e in events} == {job_id}
