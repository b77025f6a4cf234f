"""jobprogress on a real Redis Cluster: three masters and three replicas on loopback
(``jobprogress_testing.RedisCluster``), the services given its ``redis+cluster://`` URL.

Jobs of every partition run and stream as on one Redis. Then the faults, each while
clients stream a running job, and none followed by a restart of any service: its master
killed with ``SIGKILL`` (its replica takes over), then back as a replica; a manual
``CLUSTER FAILOVER`` (readers blocked on the old master get ``UNBLOCKED``); the job's slot
migrated to another master while the hub blocks on it. Each time the job completes and
every client's sequence of events equals the job's log: no gap, no duplicate.

Many jobs on one stream (``mine`` and ``job=``) over jobs on all three masters.

And the loss a failover can bring (replication is asynchronous): a master killed while its
replica is cut off takes its last events with it; no client was ever sent one of them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, collect_events, read_messages, submit_job
from jobprogress_core.keys import Keys
from jobprogress_core.model import parse_stream_id
from jobprogress_testing import TEST_ENV, RedisCluster, RedisClusterNode, Stack, eventually

pytestmark = pytest.mark.stack

SERVICES = ("job-queue-service", "worker-service", "progress-service")
FAST = {
    "JOBPROGRESS_VISIBILITY_TIMEOUT": "3",
    "JOBPROGRESS_WORKER_BLOCK_MS": "300",
    "JOBPROGRESS_REDIS_WAIT_REPLICAS": "1",
    # Well above the longest a test keeps a replica stopped: a hub read blocked on it is not
    # cut short (to be sent again to the master, since the replica is still listed).
    "JOBPROGRESS_REDIS_TIMEOUT": "15",
}
CLIENTS = 4
KEYS = Keys()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("cluster-stack"), env={**TEST_ENV, **FAST}, redis_cluster=True)
    with stack.running():
        for service in SERVICES:
            stack.start_service(service)
        yield stack


def cluster_of(stack: Stack) -> RedisCluster:
    assert stack.cluster is not None
    return stack.cluster


def partition_tag(job_id: str) -> str:
    return KEYS.tag(KEYS.partition_of(job_id))


def master_of_job(stack: Stack, job_id: str) -> RedisClusterNode:
    return cluster_of(stack).master_of(partition_tag(job_id))


async def job_state(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> dict[str, Any]:
    async with http.get(f"{stack.url('job-queue-service')}/api/jobs/{job_id}") as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def past_step(http: aiohttp.ClientSession, stack: Stack, job_id: str, step: int) -> bool:
    return int((await job_state(http, stack, job_id))["step"]) >= step


def watch(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> list[asyncio.Task[list[ReceivedEvent]]]:
    """``CLIENTS`` streams of the job, each on one connection to its end."""
    url = f"{stack.url('progress-service')}/api/progress/{job_id}"
    return [asyncio.create_task(collect_events(http, url, timeout=120)) for _ in range(CLIENTS)]


async def assert_every_client_saw_the_log(
    http: aiohttp.ClientSession, stack: Stack, job_id: str, watchers: list[asyncio.Task[list[ReceivedEvent]]]
) -> list[ReceivedEvent]:
    seen = await asyncio.gather(*watchers)
    log = await collect_events(http, f"{stack.url('progress-service')}/api/progress/{job_id}")
    assert log[-1].event == "complete", [(e.event, e.data) for e in log[-3:]]
    ids = [event.id for event in log]
    assert [parse_stream_id(i) for i in ids] == sorted({parse_stream_id(i) for i in ids})
    for events in seen:
        assert [event.id for event in events] == ids  # nothing lost, nothing twice, in order
    assert (await job_state(http, stack, job_id))["status"] == "COMPLETED"
    return log


def assert_no_service_restarted(stack: Stack, pids: dict[str, int]) -> None:
    assert {process.service: process.pid for process in stack.services if process.running} == pids


def service_pids(stack: Stack) -> dict[str, int]:
    return {process.service: process.pid for process in stack.services if process.running}


async def test_jobs_of_every_partition_run_and_stream(stack: Stack, http: aiohttp.ClientSession) -> None:
    queue = stack.url("job-queue-service")
    jobs: list[str] = []
    while len({KEYS.partition_of(job_id) for job_id in jobs}) < KEYS.partitions:
        jobs.append(await submit_job(http, queue, steps=1, durationSeconds=0.1))
        assert len(jobs) < 400, "job ids spread over the partitions"

    async def all_completed() -> bool:
        states = await asyncio.gather(*(job_state(http, stack, job_id) for job_id in jobs))
        return all(state["status"] == "COMPLETED" for state in states)

    await eventually(all_completed, f"{len(jobs)} jobs of every partition completed", timeout=90)
    masters = {master_of_job(stack, job_id).address for job_id in jobs}
    assert len(masters) == 3  # the partitions are spread over every master
    for job_id in jobs[:: max(1, len(jobs) // 20)]:
        events = await collect_events(http, f"{stack.url('progress-service')}/api/progress/{job_id}")
        assert events[-1].event == "complete"
    async with http.get(f"{queue}/api/jobs?limit=100") as response:
        listed = {job["jobId"] for job in (await response.json())["jobs"]}
    assert set(jobs[-100:]) <= listed


async def under_a_streamed_job(
    stack: Stack, http: aiohttp.ClientSession, fault: Callable[[RedisCluster, str], None], *, steps: int = 6
) -> tuple[str, list[ReceivedEvent]]:
    """Run ``fault(cluster, job_id)`` (in a thread) while ``CLIENTS`` stream a running job,
    past its second step; then the job completes, every client saw exactly its log, and no
    service was restarted. The job's id and its log."""
    pids = service_pids(stack)
    job_id = await submit_job(http, stack.url("job-queue-service"), steps=steps, durationSeconds=steps)
    watchers = watch(http, stack, job_id)
    await eventually(lambda: past_step(http, stack, job_id, 2), "the job past its second step")
    await asyncio.to_thread(fault, cluster_of(stack), job_id)
    log = await assert_every_client_saw_the_log(http, stack, job_id, watchers)
    assert_no_service_restarted(stack, pids)
    return job_id, log


async def test_a_master_killed_mid_job_then_back_as_a_replica(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    killed: list[RedisClusterNode] = []

    def kill_its_master(cluster: RedisCluster, job_id: str) -> None:
        master = master_of_job(stack, job_id)
        cluster.kill(master)
        assert cluster.wait_promoted(master).address != master.address
        killed.append(master)

    job_id, _ = await under_a_streamed_job(stack, http, kill_its_master, steps=8)
    promoted = master_of_job(stack, job_id)
    await asyncio.to_thread(cluster_of(stack).restart, killed[0])
    assert master_of_job(stack, job_id).address == promoted.address  # the killed one is its replica
    after = await submit_job(http, stack.url("job-queue-service"), steps=2, durationSeconds=0.5)
    await assert_every_client_saw_the_log(http, stack, after, watch(http, stack, after))


async def test_a_manual_failover_under_a_streamed_job(stack: Stack, http: aiohttp.ClientSession) -> None:
    def fail_over(cluster: RedisCluster, job_id: str) -> None:
        old = master_of_job(stack, job_id)
        new = cluster.failover(old)
        assert master_of_job(stack, job_id).address == new.address != old.address

    await under_a_streamed_job(stack, http, fail_over)


async def test_the_jobs_slot_migrated_while_the_hub_blocks_on_it(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    def migrate(cluster: RedisCluster, job_id: str) -> None:
        source = master_of_job(stack, job_id)
        target = next(node for node in cluster.masters() if node.address != source.address)
        cluster.migrate_slot(cluster.keyslot(partition_tag(job_id)), target)
        assert master_of_job(stack, job_id).address == target.address

    await under_a_streamed_job(stack, http, migrate)


async def test_events_a_failover_loses_were_sent_to_no_client(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    lost: list[str] = []

    def lose_the_masters_last_events(cluster: RedisCluster, job_id: str) -> None:
        stream = KEYS.events(job_id)
        replica = cluster.replica_of(master_of_job(stack, job_id))
        with cluster.cut_off(replica) as master:
            cut = master.command("XREVRANGE", stream, "+", "-", "COUNT", 1)[0][0]

            deadline = time.monotonic() + 20
            while len(alone := master.command("XRANGE", stream, f"({cut}", "+")) < 3:
                assert time.monotonic() < deadline, f"not three events on the master alone: {alone}"
                time.sleep(0.05)
            lost.extend(entry[0] for entry in alone)
            cluster.kill(master)
        assert cluster.wait_promoted(master).address == replica.address
        cluster.restart(master)

    _, log = await under_a_streamed_job(stack, http, lose_the_masters_last_events, steps=10)
    assert lost and not set(lost) & {event.id for event in log}  # lost indeed, and seen by nobody


async def test_many_jobs_on_one_stream_across_every_master(stack: Stack, http: aiohttp.ClientSession) -> None:
    """A ``mine`` stream opened first, and a ``job=`` stream, each carry jobs whose keys lie on
    all three masters; each job's events equal its single stream's, and a resume by any of
    the compound IDs carries on exactly."""
    progress, queue = stack.url("progress-service"), stack.url("job-queue-service")
    async with http.get(f"{progress}/api/progress/mine") as mine:
        assert mine.status == 200
        await mine.content.readuntil(b"\n\n")  # retry: the stream is open
        jobs: list[str] = []
        while len({master_of_job(stack, job_id).address for job_id in jobs}) < 3:
            jobs.append(await submit_job(http, queue, steps=3, durationSeconds=0.6))
            assert len(jobs) < 60, "jobs on every master"
        received: list[ReceivedEvent] = []
        async with asyncio.timeout(90):
            async for message in read_messages(mine):
                if message.event is not None and message.data is not None:
                    received.append(ReceivedEvent(message.id or "", message.event, json.loads(message.data)))
                ended = {e.data["jobId"] for e in received if e.event in ("complete", "failed", "cancelled")}
                if ended >= set(jobs):
                    break
    logs = {
        job_id: await collect_events(http, f"{progress}/api/progress/{job_id}", timeout=30) for job_id in jobs
    }
    for job_id, log in logs.items():
        assert [(e.event, e.data) for e in received if e.data["jobId"] == job_id] == [
            (e.event, e.data) for e in log
        ]
    together = await collect_events(http, f"{progress}/api/progress?" + "&".join(f"job={j}" for j in jobs))
    for job_id, log in logs.items():
        assert [e.data for e in together if e.data["jobId"] == job_id] == [e.data for e in log]
    half = len(together) // 2
    rest = await collect_events(
        http,
        f"{progress}/api/progress?" + "&".join(f"job={j}" for j in jobs),
        last_event_id=together[half].id,
    )
    for job_id in jobs:
        assert [e.data for e in rest if e.data["jobId"] == job_id] == [
            e.data for e in together[half + 1 :] if e.data["jobId"] == job_id
        ]


async def test_a_storm_of_connects_gets_each_client_its_log_and_exact_resume(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """Streams of jobs on every master opening all at once (their reads and leases batched
    into one cluster pipeline per turn of the loop, split by node): each gets its own job's
    log, from its own Last-Event-ID, exactly once."""
    progress = stack.url("progress-service")
    jobs = [
        await submit_job(http, stack.url("job-queue-service"), steps=4, durationSeconds=2) for _ in range(6)
    ]
    early = {
        job_id: [e.id for e in await collect_events(http, f"{progress}/api/progress/{job_id}", stop_after=2)]
        for job_id in jobs
    }
    starts = [(job_id, start) for job_id in jobs for start in (None, *early[job_id]) for _ in range(5)]
    seen = await asyncio.gather(
        *(
            collect_events(http, f"{progress}/api/progress/{job_id}", last_event_id=start, timeout=60)
            for job_id, start in starts
        )
    )
    logs = {
        job_id: [e.id for e in await collect_events(http, f"{progress}/api/progress/{job_id}")]
        for job_id in jobs
    }
    for (job_id, start), events in zip(starts, seen, strict=True):
        log = logs[job_id]
        assert log[-1] == events[-1].id and events[-1].event == "complete"
        assert [e.id for e in events] == (log[log.index(start) + 1 :] if start else log)
