"""With ``JOBPROGRESS_LOG_JSON=1`` every line a service writes is one JSON object, and the
lines about a job or a request carry its id, across the hop from progress-service to
job-queue-service and into the worker that runs the job."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from jobprogress_client import collect_events
from jobprogress_testing import Stack, eventually

pytestmark = pytest.mark.stack


def json_lines(stack: Stack, service: str) -> list[dict[str, Any]]:
    """Every whole line the service wrote (not one it is writing at this moment); fails on
    one that is not a JSON object."""
    text = stack.service(service).log_path.read_text()
    lines = [line for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]
    assert lines, f"{service} wrote nothing"
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{service} wrote a line that is not JSON: {line!r}") from None
        assert isinstance(entry, dict) and {"ts", "level", "service", "logger", "message"} <= entry.keys()
        assert entry["service"] == service
        entries.append(entry)
    return entries


async def test_json_lines_carry_the_request_and_job_ids_across_services(
    jobprogress_make_stack: Callable[..., Stack], http: aiohttp.ClientSession
) -> None:
    stack = jobprogress_make_stack(JOBPROGRESS_LOG_JSON="1")
    progress = stack.url("progress-service")
    request_id = "req-0123456789abcdef"
    # Submitted through the page's route: progress-service forwards it to job-queue-service.
    async with http.post(
        f"{progress}/api/jobs",
        json={"type": "build", "steps": 2, "durationSeconds": 0.5},
        headers={"X-Request-Id": request_id},
    ) as response:
        assert response.status == 202
        assert response.headers["X-Request-Id"] == request_id
        job_id = (await response.json())["jobId"]
    events = await collect_events(http, f"{progress}/api/progress/{job_id}")
    assert events[-1].event == "complete"

    submitted = [e for e in json_lines(stack, "job-queue-service") if "submitted" in e["message"]]
    assert len(submitted) == 1
    assert submitted[0]["job_id"] == job_id and submitted[0]["request_id"] == request_id

    def worker_lines_once_it_ended() -> list[dict[str, Any]]:
        about = [e for e in json_lines(stack, "worker-service") if e.get("job_id") == job_id]
        return about if any("ended: completed" in e["message"] for e in about) else []

    # The worker logs how the job ended after it appended the `complete` event the client saw.
    about_job = await eventually(worker_lines_once_it_ended, "the worker's line on the job's end")
    assert any("Started by" in e["message"] for e in about_job)
    assert all("request_id" not in e for e in about_job)  # the worker answers no request here


async def test_a_request_gets_an_id_of_its_own_when_it_brings_none_or_a_bad_one(
    jobprogress_stack: Stack, http: aiohttp.ClientSession
) -> None:
    queue = jobprogress_stack.url("job-queue-service")
    seen = []
    for given in (None, "has spaces in it", "x" * 65, "ok-id_1.2:3"):
        headers = {"X-Request-Id": given} if given is not None else {}
        async with http.get(f"{queue}/api/jobs/nope", headers=headers) as response:
            assert response.status == 404  # errors carry it too
            seen.append(response.headers["X-Request-Id"])
    made = seen[:3]
    assert all(len(made_id) == 32 and int(made_id, 16) >= 0 for made_id in made), made
    assert len(set(made)) == 3
    assert seen[3] == "ok-id_1.2:3"
