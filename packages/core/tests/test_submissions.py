"""A job submitted for the workers, on a real redis-server and on the local Redis Cluster:
its hash, first event, queue entry, history and feed entry all written, or, when the
submitter's limit refuses it, none of them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from jobprogress_core.errors import TooManyRequests
from jobprogress_core.keys import Keys
from jobprogress_core.limits import RateLimit
from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.redis import close, create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_core.submissions import Submitter


@pytest.fixture
async def store(jobprogress_any_settings: Settings) -> AsyncIterator[JobStore]:
    settings = jobprogress_any_settings
    redis = create_redis(settings)
    yield JobStore(redis, Keys(settings.key_prefix, settings.partitions))
    await close(redis)


def submitter(store: JobStore, limit: int) -> Submitter:
    return Submitter(store, RateLimit(store.redis, store.keys, "submit", limit=limit, period=60))


def new_job(owner: str) -> Job:
    return Job.new("build", {"steps": 2}, owner=owner, name="n", total_steps=2)


async def queue_entries(store: JobStore, job: Job) -> list[str]:
    entries = await store.redis.xrange(store.keys.queue_of(job.id))
    return [fields["jobId"] for _, fields in entries]


async def test_a_submitted_job_is_stored_queued_and_indexed(store: JobStore) -> None:
    owner = f"u:{uuid.uuid4().hex}"
    job = new_job(owner)
    await submitter(store, 5).submit(job, {"status": "QUEUED", "message": "waiting"})

    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.QUEUED and stored.owner == owner
    [event] = await store.events(job.id)
    assert event.id == stored.last_event_id and event.type is EventType.STATUS
    assert event.data["jobId"] == job.id and event.data["message"] == "waiting"
    assert await queue_entries(store, job) == [job.id]
    history, _ = await store.history(owner, limit=10)
    assert [listed.id for listed in history] == [job.id]
    assert await store.feed_jobs(owner, [entry_id for entry_id, _ in await feed(store, owner)]) == [job.id]


async def feed(store: JobStore, owner: str) -> list[tuple[str, dict[str, str]]]:
    return await store.feed_entries(owner, until="+", count=10)


async def test_a_repeated_call_writes_and_counts_nothing_again(store: JobStore) -> None:
    """What a command that redis-py sends again after a lost reply does: the script finds
    the job stored (its id is random: by this call) and writes nothing again."""
    owner = f"u:{uuid.uuid4().hex}"
    limited = submitter(store, 2)
    job = new_job(owner)
    await limited.submit(job, {"status": "QUEUED"})
    await limited.submit(job, {"status": "QUEUED"})
    assert len(await store.events(job.id)) == 1 and await queue_entries(store, job) == [job.id]
    if not limited.on_cluster:  # there the limit is a script of its own, counted again
        await limited.submit(new_job(owner), {"status": "QUEUED"})  # the second of two
    history, _ = await store.history(owner, limit=10)
    assert [listed.id for listed in history].count(job.id) == 1


async def test_a_refused_submission_writes_nothing(store: JobStore) -> None:
    owner = f"u:{uuid.uuid4().hex}"
    limited = submitter(store, 1)
    first = new_job(owner)
    await limited.submit(first, {"status": "QUEUED"})
    refused = new_job(owner)
    with pytest.raises(TooManyRequests) as raised:
        await limited.submit(refused, {"status": "QUEUED"})
    assert raised.value.status == 429 and int(raised.value.headers["Retry-After"]) > 0
    assert await store.get(refused.id) is None
    assert await store.events(refused.id) == []
    assert refused.id not in await queue_entries(store, refused)
    history, _ = await store.history(owner, limit=10)
    assert [listed.id for listed in history] == [first.id]
    assert len(await feed(store, owner)) == 1
    # Another owner's submissions are counted apart.
    await limited.submit(new_job(f"u:{uuid.uuid4().hex}"), {"status": "QUEUED"})


async def test_submissions_of_one_turn_each_get_their_own_answer(store: JobStore) -> None:
    """Twelve submissions at once (on one Redis, their scripts go out in one pipeline): the
    first ten within the owner's limit are stored, queued and indexed, the others refused
    with nothing written, and each caller hears of its own."""
    owner = f"u:{uuid.uuid4().hex}"
    limited = submitter(store, 10)
    # As in a service that has been up a moment (its health check has used the client): a
    # cluster client that twelve tasks use first at once counted a hit twice now and then,
    # or failed one with a ConnectionError (not yet understood; see the notes of issue 19).
    await limited.submit(new_job(f"u:{uuid.uuid4().hex}"), {"status": "QUEUED"})
    jobs = [new_job(owner) for _ in range(12)]
    outcomes = await asyncio.gather(
        *(limited.submit(job, {"status": "QUEUED"}) for job in jobs), return_exceptions=True
    )
    accepted = [job for job, outcome in zip(jobs, outcomes, strict=True) if outcome is None]
    refused = [
        job for job, outcome in zip(jobs, outcomes, strict=True) if isinstance(outcome, TooManyRequests)
    ]
    assert len(accepted) == 10 and len(refused) == 2, outcomes
    for job in accepted:
        assert job.id in await queue_entries(store, job) and len(await store.events(job.id)) == 1
    for job in refused:
        assert await store.get(job.id) is None and await store.events(job.id) == []
        assert job.id not in await queue_entries(store, job)
    history, _ = await store.history(owner, limit=20)
    assert sorted(listed.id for listed in history) == sorted(job.id for job in accepted)
