"""The worker README's examples run as documented: the handler, in-process against a real
redis-server, and the end-to-end harness example against the real stack."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from worker_helpers import consumer_for, take

from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.queue import JobQueue
from jobprogress_core.store import JobStore
from jobprogress_testing import Stack
from worker_service.context import HandlerRegistry

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def readme_handlers() -> HandlerRegistry:
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)
    handlers = namespace["handlers"]
    assert isinstance(handlers, HandlerRegistry)
    return handlers


async def run_job(store: JobStore, handlers: HandlerRegistry, **params: Any) -> Job:
    job = Job.new("compile", params, owner="o")
    await store.create(job, {"status": "QUEUED"})
    await JobQueue(store.redis, store.keys).enqueue(job.id)
    consumer = consumer_for(store, handlers)
    await consumer.process(await take(consumer))
    stored = await store.get(job.id)
    assert stored is not None
    return stored


async def test_readme_handler_succeeds_and_fails_as_documented(
    jobprogress_store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers = readme_handlers()

    async def no_wait(self: object, seconds: float) -> None:
        return None

    monkeypatch.setattr("worker_service.context.JobContext.sleep", no_wait)
    done = await run_job(jobprogress_store, handlers, steps=2)
    assert done.status is JobStatus.COMPLETED and done.result == "Build succeeded" and done.progress == 100
    events = await jobprogress_store.events(done.id)
    types = [event.type for event in events]
    assert types.count(EventType.PROGRESS) == 2 and types.count(EventType.LOG) == 2
    assert types.count(EventType.STEP) == 4 and types.count(EventType.METRIC) == 2
    assert [e.data["url"] for e in events if e.type is EventType.ARTIFACT] == [
        "https://artifacts.example.com/build.tar.gz"
    ]

    failed = await run_job(jobprogress_store, handlers, steps=3, failAtStep=2)
    assert failed.status is JobStatus.FAILED and failed.error == "part 2 did not compile"
    assert failed.progress == 33
    steps = [e.data["status"] for e in await jobprogress_store.events(failed.id) if e.type is EventType.STEP]
    assert steps == ["running", "completed", "running", "failed"]


@pytest.mark.stack
async def test_readme_harness_example_against_the_real_stack(
    jobprogress_make_stack: Callable[..., Stack], jobprogress_http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    handler_block, harness_block = python_blocks()
    package = tmp_path / "myproject"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(handler_block)
    path = ":".join([str(tmp_path), *sys.path])

    def make_stack(**env: str) -> Stack:  # the services must find the user's package
        return jobprogress_make_stack(PYTHONPATH=path, **env)

    namespace: dict[str, Any] = {}
    exec(compile(harness_block, str(README), "exec"), namespace)
    await namespace["test_compile_runs_end_to_end"](make_stack, jobprogress_http)
