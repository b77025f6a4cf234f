"""``jobprogress_client.celery``: tasks run by a real Celery worker on a Redis broker (a private
``redis-server``), reporting their external jobs; a browser-like client follows each stream."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, collect_events, start_external_job
from jobprogress_client.celery import submit_task
from jobprogress_testing import TEST_ENV, Process, RedisServer, Stack, eventually

pytestmark = pytest.mark.stack

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
SECRET = "the-celery-products-secret-of-32-chars-at-least"


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack that also takes the product's app JWTs (for the README's web side)."""
    stack = Stack(tmp_path_factory.mktemp("celery"), env={**TEST_ENV, "JOBPROGRESS_APP_JWT_SECRET": SECRET})
    with stack.running():
        for service in ("job-queue-service", "progress-service"):
            stack.start_service(service)
        yield stack


@pytest.fixture
def progress_url(product: Stack) -> str:
    return product.url("progress-service")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path_factory.mktemp("celery-broker"))
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def tasks(broker: RedisServer) -> Iterator[ModuleType]:
    """tests/celery_app.py as the worker imports it, for the test to send its tasks."""
    os.environ["CELERY_BROKER_URL"] = broker.url
    try:
        spec = importlib.util.spec_from_file_location("celery_app", HERE / "celery_app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        del os.environ["CELERY_BROKER_URL"]
    yield module
    module.app.close()


@pytest.fixture(scope="module")
def worker(
    broker: RedisServer, product: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker.url,
        "JOBPROGRESS_URL": product.url("progress-service"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool=solo", "--concurrency=1"]
    argv += ["--loglevel=info", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    process = Process("celery-worker", argv, env, tmp_path_factory.mktemp("celery") / "worker.log")
    process.start()
    try:
        process.wait_until(lambda: " ready." in process.log_tail(200), 60, "ready")
        yield process
    finally:
        process.stop(timeout=10)


async def submit(tasks: ModuleType, http: aiohttp.ClientSession, url: str, task: str, *args: Any) -> str:
    job = await submit_task(http, url, getattr(tasks, task), *args, job={"name": task})
    return job.job_id


async def follow(http: aiohttp.ClientSession, url: str, job_id: str) -> list[ReceivedEvent]:
    """As a browser does: the job's stream, from its start to its end."""
    return await collect_events(http, f"{url}/api/progress/{job_id}", timeout=60)


async def job_of(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/jobs/{job_id}") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
    return body


async def test_a_task_reports_its_steps_lines_and_result(
    tasks: ModuleType, worker: Process, jobprogress_http: aiohttp.ClientSession, progress_url: str
) -> None:
    rows = [f"row-{number}.csv" for number in range(1, 301)]
    job_id = await submit(tasks, jobprogress_http, progress_url, "import_rows", rows)
    events = await follow(jobprogress_http, progress_url, job_id)
    assert [e.data["line"] for e in events if e.event == "log"] == [f"imported {row}" for row in rows]
    progress = [
        (e.data["step"], e.data["totalSteps"], e.data["message"]) for e in events if e.event == "progress"
    ]
    assert progress == [(number, 300, row) for number, row in enumerate(rows, start=1)]
    assert (events[-1].event, events[-1].data["result"]) == ("complete", "300 rows imported")
    job = await job_of(jobprogress_http, progress_url, job_id)
    assert (
        (job["status"], job["result"])
        == (events[-1].data["status"], "300 rows imported")
        == ("COMPLETED", "300 rows imported")
    )


async def test_a_failing_task_fails_its_job_with_its_error(
    tasks: ModuleType, worker: Process, jobprogress_http: aiohttp.ClientSession, progress_url: str
) -> None:
    job = await start_external_job(jobprogress_http, progress_url, name="fail_at")
    sent = tasks.fail_at.apply_async((2,), {"job_id": job.job_id, "reporter_token": job.reporter_token})
    events = await follow(jobprogress_http, progress_url, job.job_id)
    assert [e.event for e in events][-3:] == ["log", "progress", "failed"]
    assert events[-1].data["error"] == "ValueError: step 2 went wrong"
    state = await job_of(jobprogress_http, progress_url, job.job_id)
    assert (state["status"], state["error"]) == (events[-1].data["status"], "ValueError: step 2 went wrong")
    assert state["status"] == "FAILED"
    # Celery got the exception too: the task failed, in its result backend.
    await asyncio.to_thread(sent.get, timeout=30, propagate=False)
    assert sent.failed() and isinstance(sent.result, ValueError) and str(sent.result) == "step 2 went wrong"


async def test_a_task_sees_a_cancel_between_steps(
    tasks: ModuleType, worker: Process, jobprogress_http: aiohttp.ClientSession, progress_url: str
) -> None:
    job_id = await submit(tasks, jobprogress_http, progress_url, "slow", 2000)

    async def started() -> bool:
        return int((await job_of(jobprogress_http, progress_url, job_id)).get("step") or 0) >= 1

    await eventually(started, "the task's first step")
    async with jobprogress_http.post(f"{progress_url}/api/jobs/{job_id}/cancel") as response:
        assert response.status in (200, 202), await response.text()
    events = await follow(jobprogress_http, progress_url, job_id)
    assert events[-1].event == "cancelled"
    steps = [e.data["step"] for e in events if e.event == "progress"]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] < 2000
    job = await job_of(jobprogress_http, progress_url, job_id)
    assert job["status"] == events[-1].data["status"] == "CANCELLED"


def readme_blocks() -> str:
    """The README's backend helpers (``jobprogress_token``…) and the Celery section's web side."""
    text = README.read_text()
    backend = text.split("### The backend: sign a token, submit or report", 1)[1].split("\n### ", 1)[0]
    celery = text.split("### Celery: a task reports its own job", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", backend, re.DOTALL)[:1]
    blocks += re.findall(r"```python\n(.*?)```", celery, re.DOTALL)[1:2]
    return "\n\nimport aiohttp\n\n".join(blocks)


async def test_the_readme_web_side_sends_the_readme_task(
    tasks: ModuleType, worker: Process, progress_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBPROGRESS_APP_JWT_SECRET", SECRET)
    monkeypatch.setenv("JOBPROGRESS_URL", progress_url)
    namespace: dict[str, Any] = {"import_rows": tasks.import_rows}
    exec(compile(readme_blocks(), str(README), "exec"), namespace)
    job_id = await namespace["start_import"]("ann", ["a.csv", "b.csv"])
    token = namespace["jobprogress_token"]("ann")  # a read token, as the page gets it
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        events = await follow(http, progress_url, job_id)
    assert [e.data["line"] for e in events if e.event == "log"] == ["imported a.csv", "imported b.csv"]
    assert (events[-1].event, events[-1].data["result"]) == ("complete", "2 rows imported")
