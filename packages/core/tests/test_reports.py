"""Reported events of external jobs and their deadlines, on a real redis-server: a batch in
order in one atomic step, idempotency keys, nothing after the end, claims of due jobs."""

from __future__ import annotations

import uuid

from jobprogress_core.deadlines import Deadlines
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.reports import Report, Reports
from jobprogress_core.store import JobStore


async def new_job(store: JobStore) -> Job:
    job = Job.new("ci", {}, owner="o", runner="external")
    await store.create(job, {"status": "PROCESSING"})
    return job


async def test_a_batch_is_appended_in_order_with_its_job_fields(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    reports = Reports(store)
    batch = [
        Report("log", {"level": "info", "line": "one"}),
        Report("progress", {"progress": 50}, {"progress": 50, "message": "half"}, key="p1"),
        Report("log", {"level": "info", "line": "two"}),
    ]
    outcome = await reports.append(job.id, batch, keys_ttl=60)
    assert outcome is not None and not outcome.ended and not outcome.cancel_requested
    assert len(outcome.appended) == 3 and None not in outcome.ids
    events = await store.events(job.id)
    assert [e.id for e in events[1:]] == outcome.ids
    assert [e.data.get("line") for e in events[1:]] == ["one", None, "two"]
    assert all(e.data["jobId"] == job.id and e.data["ts"] for e in events)
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.progress, stored.message, stored.last_event_id) == (50, "half", events[-1].id)
    assert await store.redis.ttl(store.keys.report_keys(job.id)) > 0


async def test_keys_appended_before_are_skipped(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    reports = Reports(store)
    first = await reports.append(job.id, [Report("log", {"line": "a"}, key="a")], keys_ttl=60)
    again = await reports.append(
        job.id, [Report("log", {"line": "a"}, key="a"), Report("log", {"line": "b"}, key="b")], keys_ttl=60
    )
    assert first is not None and again is not None
    assert again.ids[0] is None and again.ids[1] is not None
    assert [e.data.get("line") for e in await store.events(job.id)][1:] == ["a", "b"]


async def test_nothing_is_appended_once_the_job_ended(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    reports = Reports(store)
    end = Report("complete", {"status": "COMPLETED"}, {"status": "COMPLETED"}, key="end")
    done = await reports.append(job.id, [Report("log", {"line": "x"}), end], keys_ttl=60)
    assert done is not None and not done.ended
    count = len(await store.events(job.id))
    late = await reports.append(job.id, [Report("log", {"line": "late"})], keys_ttl=60)
    assert late is not None and late.ended and late.ids == []
    retried = await reports.append(job.id, [end], keys_ttl=60)  # a retry of the last batch: no conflict
    assert retried is not None and not retried.ended and retried.ids == [None]
    assert len(await store.events(job.id)) == count
    for key in (store.keys.job(job.id), store.keys.events(job.id), store.keys.report_keys(job.id)):
        assert 0 < await store.redis.ttl(key) <= store.retention_seconds
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.COMPLETED


async def test_a_missing_job_takes_nothing(jobprogress_store: JobStore) -> None:
    reports = Reports(jobprogress_store)
    assert await reports.append(uuid.uuid4().hex, [Report("log", {"line": "x"})], keys_ttl=60) is None


async def test_cancel_requested_is_told(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    await store.redis.hset(store.keys.job(job.id), "cancel_requested", "1")
    outcome = await Reports(store).append(job.id, [Report("log", {"line": "x"})], keys_ttl=60)
    assert outcome is not None and outcome.cancel_requested


async def test_the_keys_kept_are_capped_to_the_latest(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    reports = Reports(store, keys_kept=3)
    batch = [Report("log", {"line": str(n)}, key=f"k{n}") for n in range(5)]
    await reports.append(job.id, batch, keys_ttl=60)
    kept = await store.redis.zrange(store.keys.report_keys(job.id), 0, -1)
    assert kept == ["k2", "k3", "k4"]


async def test_due_deadlines_are_claimed_once(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    first, second = Deadlines(store.redis, store.keys), Deadlines(store.redis, store.keys)
    due, later = uuid.uuid4().hex, uuid.uuid4().hex
    await first.add(due, 1000.0)
    await first.add(later, 5000.0)
    assert await first.claim_due(now=2000.0) == [due]
    assert await second.claim_due(now=2000.0) == []  # claimed: pushed back by the claim time
    assert await second.claim_due(now=2000.0 + 61) == [due]  # the claim lapsed
    await first.remove(due)
    assert await first.deadline(due) is None and await first.deadline(later) == 5000.0
    await first.remove(later)


async def test_the_worker_and_a_reporter_keep_to_their_own_options(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    await Reports(store).append(job.id, [Report("log", {"line": "x"}, key="x")], keys_ttl=60)
    assert await store.redis.hget(store.keys.job(job.id), "last_token") is None  # no token: none kept
    await store.finish(job.id, EventType.CANCELLED, error="late")  # the sweeper's end: no key set
    assert 0 < await store.redis.ttl(store.keys.report_keys(job.id)) <= 60
    assert 60 < await store.redis.ttl(store.keys.job(job.id)) <= store.retention_seconds
