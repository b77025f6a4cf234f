"""The hub's partition readers on a real redis-server: every partition's jobs delivered
exactly once and in order, a reader per partition with viewers (started with its first,
ended after its last), reader connections bounded by the partitions whatever the number of
jobs, and readers that ride out a lost connection or end their streams on a failure.

The last test runs the same on the testing package's local Redis Cluster.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from jobprogress_core.keys import Keys
from jobprogress_core.logs import REQUEST_ID, ContextFilter
from jobprogress_core.model import EventType, Job
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import TEST_ENV, eventually
from jobprogress_testing import RedisCluster as LocalCluster
from progress_service.hub import Hub
from progress_service.partition_reader import PartitionReader
from progress_service.viewer import Ending, Viewer

GAUGE = "jobprogress_hub_reader_connections"

MakeHub = Callable[..., Hub]


def gauge() -> float:
    return REGISTRY.get_sample_value(GAUGE) or 0.0


async def new_jobs(store: JobStore, count: int) -> list[str]:
    jobs = [Job.new("build", {}, owner="o") for _ in range(count)]
    for job in jobs:
        await store.create(job, {"status": "QUEUED"})
    return [job.id for job in jobs]


async def jobs_in(store: JobStore, partition: int, count: int) -> list[str]:
    """``count`` new jobs of one partition."""
    found: list[str] = []
    while len(found) < count:
        job = Job.new("build", {}, owner="o")
        if store.keys.partition_of(job.id) == partition:
            await store.create(job, {"status": "QUEUED"})
            found.append(job.id)
    return found


async def watch(hub: Hub, job_id: str) -> Viewer:
    viewer = Viewer(job_id)
    await hub.subscribe(viewer)
    return viewer


async def received(viewer: Viewer, count: int, timeout: float = 5) -> list[str]:
    """The IDs of the next ``count`` events the hub buffered for ``viewer``."""
    ids: list[str] = []
    async with asyncio.timeout(timeout):
        while len(ids) < count:
            frame = viewer.pop()
            if frame is None:
                await asyncio.sleep(0.005)
            else:
                ids.append(frame.id)
    return ids


async def reader_connections(redis: Redis, role: str) -> int:
    """Connections Redis has from the hub's readers (named ``...:<role>``)."""
    return sum(1 for client in await redis.client_list() if client["name"].endswith(f":{role}"))


@pytest.fixture
async def make_hub(
    jobprogress_store: JobStore, jobprogress_settings: Callable[..., Settings]
) -> AsyncIterator[MakeHub]:
    """Hubs on the test's store, readers named ``...:<role>``; all stopped at the end."""
    hubs: list[Hub] = []

    def make(*, role: str, block_ms: int = 5000, queue_size: int = 1000) -> Hub:
        settings = jobprogress_settings()
        reader = create_redis(settings, block_ms=block_ms, max_connections=settings.partitions, role=role)
        hub = Hub(jobprogress_store, reader, jobprogress_store.keys, block_ms=block_ms, queue_size=queue_size)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


def new_role() -> str:
    return f"hub-reader-{uuid.uuid4().hex[:8]}"


async def test_the_jobs_of_every_partition_arrive_once_and_in_order(
    jobprogress_store: JobStore, make_hub: MakeHub
) -> None:
    store = jobprogress_store
    hub = make_hub(role=new_role())
    jobs = await new_jobs(store, 24)
    partitions = {store.keys.partition_of(job) for job in jobs}
    assert len(partitions) >= 8
    viewers = {job: [await watch(hub, job) for _ in range(2)] for job in jobs}
    assert set(hub.readers) == partitions

    async def write(job: str) -> list[str]:
        appended = []
        for n in range(30):
            event = await store.append(job, EventType.LOG, {"line": str(n)})
            assert event is not None
            appended.append(event.id)
        return appended

    # All jobs written at once, so that every partition's reader has events in flight.
    logs = dict(zip(jobs, await asyncio.gather(*(write(job) for job in jobs)), strict=True))
    for job, job_viewers in viewers.items():
        for viewer in job_viewers:
            assert await received(viewer, 30) == logs[job]
    await asyncio.sleep(0.1)
    assert all(viewer.pop() is None for job_viewers in viewers.values() for viewer in job_viewers)


async def test_a_partition_reader_starts_with_its_first_viewer_and_ends_after_its_last(
    jobprogress_store: JobStore, make_hub: MakeHub
) -> None:
    store = jobprogress_store
    role = new_role()
    hub = make_hub(role=role, block_ms=300)
    first, second = await jobs_in(store, 5, 2)
    before = gauge()
    assert hub.readers == {} and await reader_connections(store.redis, role) == 0

    a = await watch(hub, first)
    b = await watch(hub, second)
    assert list(hub.readers) == [5]
    event = await store.append(second, EventType.LOG, {"line": "x"})
    assert event is not None and await received(b, 1) == [event.id]
    assert await reader_connections(store.redis, role) == 1 and gauge() == before + 1

    hub.unsubscribe(a)
    await asyncio.sleep(0.5)  # more than a read: the reader goes on for the second job
    assert list(hub.readers) == [5]
    hub.unsubscribe(b)

    async def ended() -> bool:
        gone = not hub.readers and hub.reader_connections == 0
        return gone and await reader_connections(store.redis, role) == 0

    await eventually(ended, "the reader of partition 5 ended, its connection closed", timeout=2)
    assert gauge() == before

    # The partition's next viewer starts a reader again, from the job's last event on.
    c = await watch(hub, second)
    later = await store.append(second, EventType.LOG, {"line": "y"})
    assert later is not None and await received(c, 1) == [later.id]
    assert list(hub.readers) == [5] and gauge() == before + 1


async def test_a_new_job_wakes_its_partitions_blocked_reader_at_once(
    jobprogress_store: JobStore, make_hub: MakeHub
) -> None:
    store = jobprogress_store
    role = new_role()
    hub = make_hub(role=role, block_ms=5000)
    first, second = await jobs_in(store, 9, 2)
    await watch(hub, first)

    async def blocked() -> bool:
        clients = await store.redis.client_list()
        return any(c["name"].endswith(f":{role}") and "b" in c["flags"] for c in clients)

    await eventually(blocked, "the reader blocked in Redis", timeout=2)
    viewer = await watch(hub, second)  # its reader's XREAD does not include this stream yet
    event = await store.append(second, EventType.LOG, {"line": "x"})
    assert event is not None and await received(viewer, 1, timeout=1) == [event.id]


async def test_reader_connections_stay_bounded_by_the_partitions(
    jobprogress_store: JobStore, make_hub: MakeHub
) -> None:
    store = jobprogress_store
    role = new_role()
    hub = make_hub(role=role)
    jobs = await new_jobs(store, 200)
    before = gauge()
    viewers = [await watch(hub, job) for job in jobs for _ in range(2)]
    partitions = store.keys.partitions
    assert len({store.keys.partition_of(job) for job in jobs}) == partitions == 16

    events = {job: await store.append(job, EventType.LOG, {"line": job}) for job in jobs}
    for viewer in viewers:
        event = events[viewer.job_id]
        assert event is not None and await received(viewer, 1) == [event.id]
    assert await reader_connections(store.redis, role) == partitions
    assert len(hub.readers) == hub.reader_connections == partitions
    assert gauge() == before + partitions

    await hub.stop()
    assert await reader_connections(store.redis, role) == 0 and gauge() == before
    assert len(hub.wake_keys) == partitions
    assert await store.redis.exists(*hub.wake_keys) == 0  # deleted on stop


async def test_a_reader_rides_out_its_connection_being_killed(
    jobprogress_store: JobStore, make_hub: MakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    store = jobprogress_store
    role = new_role()
    hub = make_hub(role=role)
    [job] = await new_jobs(store, 1)
    caplog.handler.addFilter(ContextFilter("progress-service"))
    REQUEST_ID.set("the-request-that-started-the-reader")  # this test's task only
    viewer = await watch(hub, job)
    first = await store.append(job, EventType.LOG, {"line": "1"})
    assert first is not None and await received(viewer, 1) == [first.id]

    [reader_id] = [c["id"] for c in await store.redis.client_list() if c["name"].endswith(f":{role}")]
    await store.redis.client_kill_filter(_id=reader_id)
    # Written while the reader has no connection: it reads again after the job's cursor.
    later = [await store.append(job, EventType.LOG, {"line": str(n)}) for n in range(3)]
    assert await received(viewer, 3) == [event.id for event in later if event is not None]
    # Said once, and about no request: the reader serves every stream of its partition.
    [warning] = [r for r in caplog.records if r.name == "progress_service.partition_reader"]
    assert "redis unavailable" in warning.getMessage()
    assert (getattr(warning, "request_id", "unset"), getattr(warning, "job_id", "unset")) == (None, None)


async def test_a_reader_that_fails_ends_its_streams_and_the_next_viewer_starts_another(
    jobprogress_store: JobStore,
    make_hub: MakeHub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = jobprogress_store
    hub = make_hub(role=new_role())
    [job] = await jobs_in(store, 3, 1)
    viewer = await watch(hub, job)

    def broken(self: PartitionReader, reply: object, now: float) -> None:
        raise RuntimeError("a bug")

    with monkeypatch.context() as patch:
        patch.setattr(PartitionReader, "_deliver", broken)
        await store.append(job, EventType.LOG, {"line": "lost on this reader"})
        assert await viewer.wait(3) is Ending.ERROR  # its client resumes by its last ID
    assert hub.readers == {} and job not in hub.cursors
    assert "the reader of partition 3 failed" in caplog.text

    again = await watch(hub, job)
    event = await store.append(job, EventType.LOG, {"line": "delivered"})
    assert event is not None and await received(again, 1) == [event.id]


async def connections_per_node(cluster: RedisCluster, role: str) -> dict[str, int]:
    """Reader connections on each master of ``cluster``."""
    counts = {}
    for node in cluster.get_primaries():
        admin = Redis(host=node.host, port=int(node.port), decode_responses=True)
        counts[node.name] = await reader_connections(admin, role)
        await admin.aclose()
    return counts


async def test_on_a_cluster_every_partition_is_read_on_its_node(
    jobprogress_redis_cluster: LocalCluster,
) -> None:
    prefix = f"test{uuid.uuid4().hex[:8]}:"
    settings = Settings.from_env(
        "progress-service",
        {**TEST_ENV, "REDIS_URL": jobprogress_redis_cluster.url, "JOBPROGRESS_KEY_PREFIX": prefix},
    )
    keys = Keys(settings.key_prefix, settings.partitions)
    redis = create_redis(settings)
    assert isinstance(redis, RedisCluster)
    store = JobStore(redis, keys)  # type: ignore[arg-type]  # create_redis types it as Redis
    role = new_role()
    reader = create_redis(settings, block_ms=2000, max_connections=settings.partitions, role=role)
    hub = Hub(store, reader, keys, block_ms=2000, queue_size=1000)
    try:
        jobs = await new_jobs(store, 40)
        viewers = [await watch(hub, job) for job in jobs]
        logs: dict[str, list[str]] = {job: [] for job in jobs}
        for n in range(10):
            for job in jobs:
                event = await store.append(job, EventType.LOG, {"line": str(n)})
                assert event is not None
                logs[job].append(event.id)
        for viewer in viewers:
            assert await received(viewer, 10) == logs[viewer.job_id]
        # One reader connection per partition with viewers, each on its partition's node.
        per_node = await connections_per_node(redis, role)
        assert sum(per_node.values()) == len(hub.readers) <= settings.partitions, per_node
        assert len([count for count in per_node.values() if count]) >= 2, per_node
    finally:
        await hub.stop()
        assert sum([await redis.exists(key) for key in hub.wake_keys]) == 0
        await redis.aclose()
