"""A job's creation and end wait for a replica (``WAIT`` on the write's own connection): on
a real master and replica, what the store answered is on the replica at once; with the
replica stopped it is answered after the wait, counted and logged; progress events never
wait."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from jobprogress_core.keys import Keys
from jobprogress_core.model import EventType, Job
from jobprogress_core.replication import UNREPLICATED, Replication
from jobprogress_core.store import JobStore
from jobprogress_testing import RedisServer, eventually


@pytest.fixture(scope="module")
def master_and_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    workdir = tmp_path_factory.mktemp("replication")
    master = RedisServer(workdir)
    master.start()
    replica = RedisServer(workdir, config=["--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    try:
        yield master, replica
    finally:
        replica.stop()
        master.stop()


@pytest.fixture
async def clients(master_and_replica: tuple[RedisServer, RedisServer]) -> AsyncIterator[tuple[Redis, Redis]]:
    master, replica = master_and_replica
    to_master = Redis(port=master.port, decode_responses=True)
    to_replica = Redis(port=replica.port, decode_responses=True)

    async def linked() -> bool:
        info = await to_replica.info("replication")
        return info.get("master_link_status") == "up"

    await eventually(linked, "the replica's link to its master")
    yield to_master, to_replica
    await to_master.aclose()
    await to_replica.aclose()


def unreplicated(write: str) -> float:
    return UNREPLICATED.labels(write)._value.get()  # type: ignore[attr-defined]


def store_on(redis: Redis, replicas: int, timeout_ms: int = 2000) -> JobStore:
    return JobStore(redis, Keys(f"repl{os.getpid()}:"), replication=Replication(replicas, timeout_ms))


async def test_what_the_store_answered_is_on_the_replica(clients: tuple[Redis, Redis]) -> None:
    to_master, to_replica = clients
    store = store_on(to_master, replicas=1)
    created, ended = unreplicated("create"), unreplicated("end")
    job = Job.new("build", {}, owner="anon:o")
    first = await store.create(job, {"status": "QUEUED", "message": "queued"})
    assert [entry_id for entry_id, _ in await to_replica.xrange(store.keys.events(job.id))] == [first]
    assert await to_replica.hget(store.keys.job(job.id), "status") == "QUEUED"  # no waiting needed
    ended_event = await store.finish(job.id, EventType.COMPLETE, result="done")
    assert ended_event is not None
    assert await to_replica.hget(store.keys.job(job.id), "status") == "COMPLETED"
    assert (unreplicated("create"), unreplicated("end")) == (created, ended)


async def test_a_write_the_replica_does_not_confirm_is_answered_after_the_wait_and_counted(
    master_and_replica: tuple[RedisServer, RedisServer],
    clients: tuple[Redis, Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, replica = master_and_replica
    to_master, _ = clients
    store = store_on(to_master, replicas=1, timeout_ms=200)
    job = Job.new("build", {}, owner="anon:o")
    await store.create(job, {"status": "QUEUED", "message": "queued"})
    created, ended = unreplicated("create"), unreplicated("end")
    os.kill(replica.pid, signal.SIGSTOP)  # it stops reading: no acknowledgement comes
    try:
        other = Job.new("build", {}, owner="anon:o")
        assert await store.create(other, {"status": "QUEUED", "message": "queued"}) is not None
        assert unreplicated("create") == created + 1
        assert "confirmed by 0 of 1 replicas" in caplog.text
        progress = await store.append(job.id, EventType.PROGRESS, {"progress": 50}, progress=50)
        assert progress is not None and unreplicated("end") == ended  # progress never waits
        assert await store.finish(job.id, EventType.COMPLETE, result="done") is not None
        assert unreplicated("end") == ended + 1
        assert await to_master.hget(store.keys.job(job.id), "status") == "COMPLETED"  # the master has it
    finally:
        os.kill(replica.pid, signal.SIGCONT)


async def test_nothing_is_counted_without_replicas_asked_for(
    master_and_replica: tuple[RedisServer, RedisServer], clients: tuple[Redis, Redis]
) -> None:
    _, replica = master_and_replica
    store = store_on(clients[0], replicas=0)
    created = unreplicated("create")
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        assert await store.create(Job.new("build", {}, owner="anon:o"), {"status": "QUEUED"}) is not None
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert unreplicated("create") == created
