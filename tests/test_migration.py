"""The move of a running single-Redis deployment to the partitioned key layout, as an
operator does it (README, "Moving to the partitioned layout"): the last release before
partitions runs jobs (one finished, one running whose worker then dies, one queued, one
external) while a client streams; its services stop; ``python -m jobprogress_core.migrate``
runs; today's services start on the same Redis. No job is lost, the client resumes with its
last event ID exactly, and every job ends as it would have."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from jobprogress_client import collect_events
from jobprogress_testing import TEST_ENV, Stack, bearer_headers, eventually

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
#: The last revision of main with the layout before partitions.
LAST_UNPARTITIONED = "d9610f01ae03c0048bdeaacfcb9a8d7a0479f6ba"
SERVICES = ("job-queue-service", "worker-service", "progress-service")


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> str:
    """That revision's packages, as a ``PYTHONPATH`` that puts them before today's."""
    where = tmp_path_factory.mktemp("old-release")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", LAST_UNPARTITIONED, "packages"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return ":".join(str(src) for src in sorted(where.glob("packages/*/src")))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, env={**TEST_ENV, "JOBPROGRESS_WORKER_CONCURRENCY": "1"})
    with stack.running():
        yield stack


async def job_status(http: aiohttp.ClientSession, url: str, job_id: str) -> str:
    async with http.get(f"{url}/api/jobs/{job_id}") as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["status"])


async def completed(http: aiohttp.ClientSession, url: str, job_id: str) -> bool:
    return await job_status(http, url, job_id) == "COMPLETED"


async def submit(http: aiohttp.ClientSession, url: str, **body: object) -> dict[str, str]:
    async with http.post(f"{url}/api/jobs", json={"type": "build", **body}) as response:
        assert response.status == 202, await response.text()
        return dict(await response.json())


async def test_a_running_deployment_moves_to_partitioned_keys_and_loses_nothing(
    stack: Stack, old_release: str
) -> None:
    web = str(ROOT / "web")  # the old release's page is not in its packages
    old = {
        service: stack.start_service(service, PYTHONPATH=old_release, JOBPROGRESS_WEB_DIR=web)
        for service in SERVICES
    }
    queue, progress = old["job-queue-service"].url, old["progress-service"].url
    async with aiohttp.ClientSession(headers=bearer_headers()) as http:
        done = (await submit(http, queue, steps=1, durationSeconds=0.1))["jobId"]
        await eventually(lambda: completed(http, queue, done), "the first job's end")
        running = (await submit(http, queue, steps=8, durationSeconds=8))["jobId"]
        waiting = (await submit(http, queue, steps=1, durationSeconds=0.1))["jobId"]  # one slot: it waits
        external = await submit(http, queue, runner="external")
        reporter = {"Authorization": f"Bearer {external['reporterToken']}"}
        report_url = f"{queue}/api/jobs/{external['jobId']}/events"
        before = {"type": "log", "line": "before"}
        async with http.post(report_url, json=before, headers=reporter) as response:
            assert response.status == 200, await response.text()
        seen = await collect_events(http, f"{progress}/api/progress/{running}", stop_after=4)
        assert len(seen) == 4 and seen[-1].event in ("log", "progress", "status")

        old["worker-service"].signal(signal.SIGKILL)  # it dies holding the running job
        for service in ("job-queue-service", "progress-service"):
            old[service].stop()
        migration = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobprogress_core.migrate", env=stack.env(), stdout=asyncio.subprocess.PIPE
        )
        output, _ = await migration.communicate()
        assert migration.returncode == 0
        assert "moved: 4 jobs, 2 queued jobs (1 handed back), 1 external deadlines" in output.decode()

        new = {service: stack.start_service(service) for service in SERVICES}
        queue, progress = new["job-queue-service"].url, new["progress-service"].url
        stream = f"{progress}/api/progress/{running}"
        rest = await collect_events(http, stream, last_event_id=seen[-1].id, timeout=60)
        whole = await collect_events(http, stream)
        assert [e.id for e in seen + rest] == [e.id for e in whole]  # resumed exactly
        assert rest[-1].event == "complete"
        assert any("partitioned" in e.data.get("message", "") for e in rest if e.event == "status")
        await eventually(lambda: completed(http, queue, waiting), "the queued job's end", timeout=60)
        assert await job_status(http, queue, done) == "COMPLETED"

        report_url = f"{queue}/api/jobs/{external['jobId']}/events"
        async with http.post(report_url, json={"type": "complete"}, headers=reporter) as response:
            assert response.status == 200, await response.text()
        logged = await collect_events(http, f"{progress}/api/progress/{external['jobId']}")
        assert [e.data["line"] for e in logged if e.event == "log"] == ["before"]
        assert logged[-1].event == "complete"
        async with http.get(f"{queue}/api/jobs") as response:
            listed = {job["jobId"] for job in (await response.json())["jobs"]}
        assert listed == {done, running, waiting, external["jobId"]}
