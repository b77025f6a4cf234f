"""Consul: every instance registers with a passing check, deregisters on a graceful stop,
serves even when the agent is away, registering once it comes, and registers again when a
restarted agent has forgotten it; a worker's stuck job loop turns its TTL check critical."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from jobprogress_client import collect_events, submit_job
from jobprogress_testing import ConsulAgent, ServiceProcess, Stack, eventually, free_port

pytestmark = pytest.mark.stack

SERVICES = ("job-queue-service", "worker-service", "progress-service")


def passing_ids(agent: ConsulAgent, service: str) -> set[str]:
    return {entry["Service"]["ID"] for entry in agent.health(service, passing=True)}


def all_ids(agent: ConsulAgent, service: str) -> set[str]:
    return {entry["Service"]["ID"] for entry in agent.health(service)}


async def test_all_three_services_are_passing_in_consul(jobprogress_stack: Stack) -> None:
    consul = jobprogress_stack.consul
    assert consul is not None
    for service in SERVICES:
        instance = jobprogress_stack.service(service)

        def passing_entry(service: str = service, port: int = instance.port) -> dict[str, Any] | None:
            entries = consul.health(service, passing=True)  # other tests' instances may be there too
            return next((entry for entry in entries if entry["Service"]["Port"] == port), None)

        entry = await eventually(passing_entry, f"{service} passing")
        assert entry["Service"]["Address"] == "127.0.0.1"
        assert entry["Service"]["Meta"]["version"]
        assert entry["Service"]["ID"].startswith(f"{service}-")
        checks = {check["CheckID"]: check for check in entry["Checks"]}
        http_check = next(check for check in checks.values() if ":http:" in check["CheckID"])
        assert http_check["Status"] == "passing"
        assert http_check["ServiceName"] == service


async def test_graceful_stop_removes_the_instance_from_consul(jobprogress_stack: Stack) -> None:
    consul = jobprogress_stack.consul
    assert consul is not None
    before = all_ids(consul, "job-queue-service")
    extra = jobprogress_stack.start_service("job-queue-service")
    new_ids = await eventually(
        lambda: passing_ids(consul, "job-queue-service") - before, "the new one passing"
    )
    assert len(new_ids) == 1

    assert extra.stop() == 0
    # Gone at once, not merely critical: the instance deregistered itself before exiting.
    assert not all_ids(consul, "job-queue-service") & new_ids


async def test_service_serves_without_consul_and_registers_when_it_arrives(
    jobprogress_stack: Stack, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    consul_port = free_port()
    queue = jobprogress_stack.start_service("job-queue-service", CONSUL_HTTP_ADDR=f"127.0.0.1:{consul_port}")
    try:
        async with http.get(f"{queue.url}/health") as response:
            assert response.status == 200
        job_id = await submit_job(http, queue.url, steps=1, durationSeconds=0.1)
        progress = jobprogress_stack.url("progress-service")
        events = await collect_events(http, f"{progress}/api/progress/{job_id}")
        assert events[-1].event == "complete"
        await eventually(lambda: "consul unavailable" in queue.log_tail(), "a warning that consul is away")

        agent = ConsulAgent(tmp_path, http_port=consul_port)
        agent.start()
        try:
            await eventually(
                lambda: passing_ids(agent, "job-queue-service"), "registered when it came", timeout=30
            )
        finally:
            agent.stop()
    finally:
        queue.stop()


async def test_page_job_calls_are_forwarded_to_a_job_queue_found_in_consul(
    jobprogress_stack: Stack, http: aiohttp.ClientSession
) -> None:
    progress = jobprogress_stack.url("progress-service")
    async with http.post(f"{progress}/api/jobs", json={"steps": 1, "durationSeconds": 0.1}) as response:
        assert response.status == 202
        body = await response.json()
        assert response.headers["Location"] == f"/api/jobs/{body['jobId']}"
    async with http.get(f"{progress}/api/jobs/{body['jobId']}") as response:
        assert response.status == 200
        assert (await response.json())["jobId"] == body["jobId"]
    async with http.post(f"{progress}/api/jobs", data=b"{oops") as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_request"


STUCK_HANDLERS = """
import time

from worker_service.context import HandlerRegistry

handlers = HandlerRegistry()


@handlers.register("stuck")
async def stuck(ctx):
    time.sleep(30)  # blocking call in async code: the worker's loop stops turning
    return "too late"
"""


def loop_check_in(agent: ConsulAgent, worker_port: int, status: str) -> dict[str, Any] | None:
    check = loop_check(agent, worker_port)
    return check if check is not None and check["Status"] == status else None


def loop_check(agent: ConsulAgent, worker_port: int) -> dict[str, Any] | None:
    """The TTL check on the job loop of the worker instance on ``worker_port``."""
    for entry in agent.health("worker-service"):
        if entry["Service"]["Port"] == worker_port:
            for check in entry["Checks"]:
                if check["CheckID"].endswith(":loop"):
                    return dict(check)
    return None


async def test_a_worker_whose_job_loop_is_stuck_turns_critical(
    jobprogress_stack: Stack, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    (tmp_path / "stuckjobs.py").write_text(STUCK_HANDLERS)
    own = {"JOBPROGRESS_KEY_PREFIX": "stuck-test:", "JOBPROGRESS_JOB_TYPES": "stuck"}  # a queue of its own
    worker = jobprogress_stack.start_service(
        "worker-service", JOBPROGRESS_HANDLERS="stuckjobs:handlers", PYTHONPATH=str(tmp_path), **own
    )
    queue = jobprogress_stack.start_service("job-queue-service", **own)
    consul = jobprogress_stack.consul
    assert consul is not None
    try:
        check = await eventually(
            lambda: (
                (c := loop_check_in(consul, worker.port, "passing")) and "slots busy" in c["Output"] and c
            ),
            "the loop check passing, with the loop's own word on how it is",
        )
        assert check["Output"].endswith("slots busy")

        await submit_job(http, queue.url, type="stuck", steps=1, durationSeconds=1)
        check = await eventually(
            lambda: loop_check_in(consul, worker.port, "critical"), "the loop check critical", timeout=30
        )
        assert "TTL expired" in check["Output"]
    finally:
        worker.kill()  # its loop is stuck for 30 s: it could not stop in order
        queue.stop()
        for entry in consul.health("worker-service"):  # and it could not deregister
            if entry["Service"]["Port"] == worker.port:
                consul.deregister(entry["Service"]["ID"])


async def test_services_come_back_by_themselves_after_the_agent_restarts(
    jobprogress_make_stack: Callable[..., Stack],
) -> None:
    """A dev agent forgets everything when it restarts: each service notices that it is no
    longer known and registers again, passing, with no restart of its own."""
    stack = jobprogress_make_stack()
    agent = stack.consul
    assert agent is not None
    before = {service: all_ids(agent, service) for service in SERVICES}
    worker_port = stack.service("worker-service").port
    agent.stop()
    agent.start()  # same ports, empty catalog
    await asyncio.to_thread(stack.wait_passing, 30)
    assert {service: all_ids(agent, service) for service in SERVICES} == before  # the same instances
    await eventually(lambda: loop_check_in(agent, worker_port, "passing"), "the loop check passing")
    assert all(process.running for process in stack.services)  # none was restarted

    def registrations(process: ServiceProcess) -> int:
        return process.log_tail(200).count("registered ") - process.log_tail(200).count("deregistered")

    for process in stack.services:  # each registered twice: at its start, and after the agent's
        # (the line follows Consul's answer, which wait_passing may have seen first)
        await eventually(
            lambda process=process: registrations(process) >= 2, f"{process.name} registered again"
        )
        assert registrations(process) == 2


async def test_page_submissions_keep_succeeding_when_a_job_queue_instance_dies(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    """Two job-queue instances; one is killed (no deregistration: Consul still lists it as
    passing until its check fails). Every submission through the page's route succeeds."""
    stack = jobprogress_make_stack(("job-queue-service", "progress-service"))
    second = stack.start_service("job-queue-service")
    stack.wait_passing()
    progress = stack.url("progress-service")
    first = stack.service("job-queue-service")
    assert first is not second

    async def routed_to_second() -> bool:
        """progress-service has learnt of ``second`` (Consul knowing it is not enough)."""
        async with http.get(f"{progress}/api/jobs/{'0' * 32}") as response:  # forwarded, harmless
            assert response.status == 404
        async with http.get(f"{second.url}/metrics") as response:
            return 'route="/api/jobs/{job_id}"' in await response.text()

    await eventually(routed_to_second, "progress-service forwarding to the second instance too")
    first.kill()
    accepted = []
    for n in range(20):
        async with http.post(f"{progress}/api/jobs", json={"name": f"job {n}", "steps": 1}) as response:
            assert response.status == 202, await response.text()
            accepted.append((await response.json())["jobId"])
    async with http.get(f"{progress}/api/jobs?limit=50") as response:
        listed = [job["jobId"] for job in (await response.json())["jobs"]]
    assert sorted(listed) == sorted(accepted)  # each once: a retry never submits twice

    async def dead_one_tried() -> bool:  # it was tried, then skipped: said in the log, soon
        return "unreachable" in stack.service("progress-service").log_tail(200)

    await eventually(dead_one_tried, "progress-service logging the dead instance as unreachable")
