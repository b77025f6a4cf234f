"""Usable as soon as healthy: an instance whose ``/health`` answers 200 is found through
Consul within a second, at its start and when Redis comes back, although Consul's own
check of ``/health`` runs far less often here (so only the instance itself can have said so)."""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp
import pytest

from jobprogress_testing import ServiceProcess, Stack, eventually

pytestmark = pytest.mark.stack

#: Far above any gap measured here: Consul's own check cannot be what made an instance pass.
SLOW_CHECKS = {"JOBPROGRESS_CONSUL_CHECK_INTERVAL": "30"}


async def first_healthy(http: aiohttp.ClientSession, process: ServiceProcess) -> float:
    """Poll ``/health`` until it answers 200; the moment it did."""

    async def healthy() -> float | None:
        try:
            async with http.get(f"{process.url}/health") as response:
                return time.monotonic() if response.status == 200 else None
        except aiohttp.ClientConnectionError:
            return None  # not listening yet

    return await eventually(healthy, f"{process.name} healthy", interval=0.01)


async def test_a_job_queue_is_usable_through_the_page_the_moment_it_is_healthy(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(("progress-service",), **SLOW_CHECKS)
    progress = stack.url("progress-service")
    gaps = []
    for n in range(5):
        queue = stack.start_service("job-queue-service", wait=False)
        healthy_at = await first_healthy(http, queue)
        async with http.post(f"{progress}/api/jobs", json={"name": f"start {n}", "steps": 1}) as response:
            assert response.status == 202, await response.text()  # the first try, no retry
        gaps.append(time.monotonic() - healthy_at)
        assert queue.stop() == 0
    print("from /health 200 to a job accepted through the page, s:", " ".join(f"{g:.3f}" for g in gaps))
    assert max(gaps) < 1.0, f"from /health 200 to a job accepted through the page: {gaps}"


async def test_consul_sees_an_instance_pass_again_the_moment_redis_is_back(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(("job-queue-service",), JOBPROGRESS_CONSUL_CHECK_INTERVAL="3")
    assert stack.redis is not None and stack.consul is not None
    consul, queue = stack.consul, stack.service("job-queue-service")

    def status_in_consul() -> str:
        (entry,) = consul.health("job-queue-service")
        statuses = {check["Status"] for check in entry["Checks"] if check["ServiceID"]}
        return "passing" if statuses == {"passing"} else "critical"

    gaps = []
    for _ in range(2):
        stack.redis.stop()
        # Consul's own check (every 3 s) sees the outage...
        await eventually(lambda: status_in_consul() == "critical", "critical in consul", timeout=15)
        stack.redis.start()
        healthy_at = await first_healthy(http, queue)
        # ...but the instance itself tells Consul that it passes again.
        await eventually(lambda: status_in_consul() == "passing", "passing in consul", interval=0.01)
        gaps.append(time.monotonic() - healthy_at)
    print("from /health 200 to passing in Consul, s:", " ".join(f"{g:.3f}" for g in gaps))
    assert max(gaps) < 1.0, f"from /health 200 to passing in Consul: {gaps}"
