"""The OpenAPI description at /api/openapi.json, and the API fuzzed against it by
schemathesis: no 5xx, no response outside the description, bad input always refused."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from jobprogress_client import collect_events
from jobprogress_client.protocol import TERMINAL_STATUS_OF, EventType
from jobprogress_testing import Stack, bearer_headers

pytestmark = pytest.mark.stack

SCHEMATHESIS = Path(sys.executable).with_name("st")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
    ]
)
#: The statuses that refuse a request (schemathesis's own list, plus 413 for a body too large).
REFUSALS = (400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429)


async def test_the_description_is_generated_from_the_schemas(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    for base in (queue_url, progress_url):  # the page's origin forwards it too
        async with http.get(f"{base}/api/openapi.json") as response:
            assert response.status == 200
            spec = await response.json()
        assert spec["openapi"] == "3.1.0"
        assert set(spec["paths"]) == {
            "/api/jobs",
            "/api/jobs/{jobId}",
            "/api/jobs/{jobId}/cancel",
            "/api/jobs/{jobId}/share",
            "/api/jobs/{jobId}/events",
            "/api/push/key",
            "/api/push/subscriptions",
            "/api/tokens",
        }
        request = spec["components"]["schemas"]["JobRequest"]
        assert request["additionalProperties"] is False
        assert request["properties"]["steps"] == {
            "type": "integer",
            "default": 4,
            "minimum": 1,
            "maximum": 100,
        }
        assert "at most `steps`" in request["properties"]["failAtStep"]["description"]
        assert set(spec["components"]["securitySchemes"]) == {"bearer", "cookie"}


async def test_schemathesis_finds_no_server_error_and_nothing_off_the_description(
    jobprogress_stack: Stack, tmp_path: Path
) -> None:
    """Bounded: 15 examples per operation and a minute for the coverage and fuzzing phases.

    Against an instance with a key prefix of its own: the jobs it makes (some of them a day
    long) go to a queue no worker of the shared stack reads."""
    queue = jobprogress_stack.start_service("job-queue-service", JOBPROGRESS_KEY_PREFIX="schemathesis:")
    try:
        await run_schemathesis(queue.url, tmp_path)
    finally:
        queue.stop()


async def test_schemathesis_fuzzes_the_reporter_api_with_a_real_reporter_token(
    jobprogress_stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """``POST /api/jobs/{id}/events`` takes one job's reporter token only: the run gets an
    external job of its own and its token, with a report rate it cannot reach (the limit is
    tested in test_external_jobs.py). Its bodies end the job sooner or later: what follows
    is 409, or 422 for a body that is wrong as well, and never a 5xx."""
    prefix = "schemathesis-report:"
    queue = jobprogress_stack.start_service(
        "job-queue-service", JOBPROGRESS_KEY_PREFIX=prefix, JOBPROGRESS_REPORTS_PER_MINUTE="1000000"
    )
    progress = jobprogress_stack.start_service("progress-service", JOBPROGRESS_KEY_PREFIX=prefix)
    try:
        body = {"type": "import", "runner": "external"}
        async with http.post(f"{queue.url}/api/jobs", json=body) as response:
            assert response.status == 202, await response.text()
            job = await response.json()
        await run_schemathesis(
            queue.url,
            tmp_path,
            ["--include-operation-id", "reportEvents"],
            authorization=f"Bearer {job['reporterToken']}",
            job_id=job["jobId"],
            # Valid bodies once the job has ended (its first final event) are a 409.
            may_mismatch="POST /api/jobs/{jobId}/events",
        )
        # Some body ended the job: its status and its stream's last event agree.
        async with http.get(f"{queue.url}/api/jobs/{job['jobId']}") as response:
            status = (await response.json())["status"]
        events = await collect_events(http, f"{progress.url}/api/progress/{job['jobId']}")
        assert TERMINAL_STATUS_OF[EventType(events[-1].event)] == status
    finally:
        progress.stop()
        queue.stop()


async def run_schemathesis(
    base: str,
    workdir: Path,
    operations: list[str] | None = None,
    authorization: str | None = None,
    job_id: str | None = None,
    may_mismatch: str = "POST /api/jobs",
) -> None:
    """Every operation but the reporter's (its only credential is one job's reporter token:
    see above) and Web Push's, unless ``operations`` says which; ``job_id`` fixes the path's job;
    ``may_mismatch`` is the one operation that may reject most valid-looking data.

    A body over the size limit is refused with 413, as described: schemathesis's list of the
    statuses that refuse bad data gets it."""
    authorization = authorization or bearer_headers()["Authorization"]
    config = [
        "[checks.negative_data_rejection]",
        f"expected-statuses = [{', '.join(map(str, REFUSALS))}]",
        *([f'[parameters]\n"path.jobId" = "{job_id}"'] if job_id else []),
    ]
    (workdir / "schemathesis.toml").write_text("\n".join(config) + "\n")
    command = [
        str(SCHEMATHESIS), "run", f"{base}/api/openapi.json",
        "--phases", "coverage,fuzzing", "--max-examples", "15", "--max-time", "60",
        "--checks", CHECKS, "--header", f"Authorization: {authorization}",
        "--seed", "20261127", "--continue-on-failure", "--no-color",
        # Not the reporter's (above), nor Web Push's: this instance has no VAPID key, so they
        # are 404 push_disabled whatever the body (tests/test_push.py runs them with one).
        *(operations or ["--exclude-operation-id", "reportEvents", "--exclude-path-regex", "^/api/push/"]),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(  # in tmp_path: its cache stays out of the tree
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=workdir
    )
    try:
        async with asyncio.timeout(240):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-8000:]
    assert " passed" in report and "failed" not in report, report[-8000:]
    # The description is exact, but for one rule JSON Schema cannot state (failAtStep at most
    # steps, said in words instead): random bodies break it about half the time, so
    # schemathesis may call POST /api/jobs "mostly rejected". Never any other operation.
    mismatched = re.findall(r"^\s+- (\w+ \S+)$", report.partition("Schema validation mismatch")[2], re.M)
    assert set(mismatched) <= {may_mismatch}, report[-8000:]
