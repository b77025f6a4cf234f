"""Job state and event log on a real redis-server: atomic steps, nothing after the end."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from jobprogress_core.keys import Keys
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.store import ClaimLost, HistoryCursor, JobStore, NewEvent


def new_job() -> Job:
    return Job.new("build", {"steps": 2}, owner="o", name="n", total_steps=2)


async def test_create_stores_hash_and_first_event_together(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = new_job()
    first = await store.create(job, {"status": "QUEUED", "message": "waiting"})
    assert first is not None
    stored = await store.get(job.id)
    assert stored is not None and stored.last_event_id == first and stored.status is JobStatus.QUEUED
    [event] = await store.events(job.id)
    assert event.id == first and event.type is EventType.STATUS
    assert event.data["jobId"] == job.id and event.data["status"] == "QUEUED" and event.data["ts"]
    assert await store.create(job, {"status": "QUEUED"}) is None  # ids are never reused


async def test_append_updates_hash_and_stream_atomically(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = new_job()
    await store.create(job, {"status": "QUEUED"})
    event = await store.append(job.id, EventType.PROGRESS, {"progress": 50}, progress=50, step=1, result=None)
    assert event is not None
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.progress, stored.step, stored.result, stored.last_event_id) == (50, 1, None, event.id)
    assert (await store.events(job.id))[-1] == event


async def test_nothing_is_appended_after_a_terminal_event(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = new_job()
    await store.create(job, {"status": "QUEUED"})
    done = await store.append(job.id, EventType.COMPLETE, {"status": "COMPLETED"}, status="COMPLETED")
    assert done is not None
    assert await store.append(job.id, EventType.LOG, {"line": "late"}) is None
    assert await store.append(uuid.uuid4().hex, EventType.LOG, {"line": "nobody"}) is None
    stored = await store.get(job.id)
    assert stored is not None and stored.last_event_id == done.id
    assert [e.type for e in await store.events(job.id)] == [EventType.STATUS, EventType.COMPLETE]


async def test_events_after_and_until_are_exact(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = new_job()
    await store.create(job, {"status": "QUEUED"})
    for n in range(5):
        await store.append(job.id, EventType.LOG, {"line": str(n)})
    events = await store.events(job.id)
    assert await store.events(job.id, events[1].id) == events[2:]
    assert await store.events(job.id, events[1].id, until=events[3].id) == events[2:4]
    assert await store.events(job.id, events[1].id, count=2) == events[2:4]
    assert await store.first_event_id(job.id) == events[0].id
    assert await store.last_event_id(job.id) == events[-1].id


async def test_event_stream_is_capped(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    capped = JobStore(store.redis, Keys(store.keys.prefix), stream_maxlen=100)
    job = new_job()
    await capped.create(job, {"status": "QUEUED"})
    for n in range(1000):
        await capped.append(job.id, EventType.LOG, {"line": str(n)})
    length = await store.redis.xlen(store.keys.events(job.id))
    assert 100 <= length < 300
    stored = await store.get(job.id)
    assert stored is not None and stored.last_event_id == await store.last_event_id(job.id)


async def test_a_retried_append_is_not_appended_twice(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = new_job()
    await store.create(job, {"status": "QUEUED"})
    first = await store.append(job.id, EventType.LOG, {"line": "once"}, token="t-1")
    again = await store.append(job.id, EventType.LOG, {"line": "once"}, token="t-1")
    assert first is not None and again is not None and again.id == first.id
    other = await store.append(job.id, EventType.LOG, {"line": "twice"}, token="t-2")
    assert other is not None and other.id != first.id
    assert [e.data.get("line") for e in await store.events(job.id)] == [None, "once", "twice"]
    done = await store.finish(job.id, EventType.COMPLETE, result="r")
    assert done is not None
    # A retry of the terminal append itself still answers with its ID, not "finished".
    retried = await store.append(
        job.id, EventType.COMPLETE, {}, token=await store.redis.hget(store.keys.job(job.id), "last_token")
    )
    assert retried is not None and retried.id == done.id


async def test_a_batch_is_retried_by_its_token_and_keys_need_a_key_set(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = new_job()
    await store.create(job, {"status": "QUEUED"})
    batch = [NewEvent("log", {"line": "a"}), NewEvent("log", {"line": "b"}, {"message": "b"})]
    done = await store.append_batch(job.id, batch, token="t-1")
    assert done.status == "ok" and len(done.ids) == 2 and None not in done.ids
    again = await store.append_batch(job.id, batch, token="t-1")
    assert again.status == "again" and again.ids == done.ids[-1:]
    assert [e.data.get("line") for e in await store.events(job.id)] == [None, "a", "b"]
    with pytest.raises(ValueError, match="keys_ttl"):
        await store.append_batch(job.id, [NewEvent("log", {"line": "c"}, key="c")])
    assert (await store.append_batch(uuid.uuid4().hex, batch)).status == "missing"


async def test_appends_check_the_claim_and_ended_jobs_expire(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = new_job()
    await store.create(job, {"status": "QUEUED"})
    await store.append(job.id, EventType.STATUS, {"status": "PROCESSING"}, status="PROCESSING", entry="1-0")
    assert await store.append(job.id, EventType.LOG, {"line": "mine"}, holder="1-0") is not None
    with pytest.raises(ClaimLost):
        await store.append(job.id, EventType.LOG, {"line": "not mine"}, holder="2-0")
    assert await store.redis.ttl(store.keys.job(job.id)) == -1  # running: kept
    await store.finish(job.id, EventType.COMPLETE, result="r", holder="1-0")
    for key in (store.keys.job(job.id), store.keys.events(job.id)):
        assert 0 < await store.redis.ttl(key) <= store.retention_seconds


async def test_history_pages_are_exact_even_within_one_millisecond(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    owner = f"owner-{uuid.uuid4().hex[:6]}"
    jobs = [Job.new("build", {}, owner=owner) for _ in range(7)]
    same_ms = jobs[0].created_at
    jobs = [dataclasses.replace(job, created_at=same_ms) for job in jobs[:4]] + jobs[4:]
    for job in jobs:
        await store.create(job, {"status": "QUEUED"})
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.history(owner, limit=3, before=cursor)
        seen += [job.id for job in page]
        if cursor is None:
            break
        assert HistoryCursor.parse(str(cursor)) == cursor
    assert sorted(seen) == sorted(job.id for job in jobs) and len(seen) == len(set(seen))
    created = [next(j for j in jobs if j.id == job_id).created_ms for job_id in seen]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize(
    "value", ["", "12", "12-", "x-" + "a" * 32, "12-" + "A" * 32, "-1-" + "a" * 32, "١٢-" + "a" * 32]
)
def test_history_cursor_rejects_garbage(value: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        HistoryCursor.parse(value)


async def test_an_end_is_announced_once_wherever_it_is_written(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    finished, reported = new_job(), new_job()
    for job in (finished, reported):
        await store.create(job, {"status": "QUEUED"})
    await store.append(finished.id, EventType.LOG, {"line": "not an end"})
    token = uuid.uuid4().hex
    assert await store.finish(finished.id, EventType.FAILED, error="boom", token=token) is not None
    assert await store.finish(finished.id, EventType.FAILED, error="boom", token=token) is not None  # a retry
    assert await store.finish(finished.id, EventType.COMPLETE) is None  # it has ended
    batch = [
        NewEvent("log", {"line": "last"}),
        NewEvent("complete", {"status": "COMPLETED"}, {"status": "COMPLETED"}),
    ]
    assert (await store.append_batch(reported.id, batch)).status == "ok"
    entries = await store.redis.xrange(store.keys.endings())
    assert [fields for _, fields in entries] == [{"jobId": finished.id}, {"jobId": reported.id}]
