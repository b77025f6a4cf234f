"""External jobs over HTTP: submitted with ``"runner": "external"``, reported through
``POST /api/jobs/{id}/events`` with the job's reporter token, streamed like any other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from jobprogress_client import collect_events as collect
from jobprogress_core.security import Audience, Tokens, issue_reporter_token
from jobprogress_testing import TEST_SECRET_KEY, Stack, eventually

pytestmark = pytest.mark.stack


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    """A client with no identity of its own."""
    async with aiohttp.ClientSession() as session:
        yield session


async def submit_external(http: aiohttp.ClientSession, queue_url: str, **params: Any) -> dict[str, Any]:
    async with http.post(f"{queue_url}/api/jobs", json={"runner": "external", **params}) as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 202, body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def report(
    http: aiohttp.ClientSession, queue_url: str, job: dict[str, Any], payload: Any, token: str | None = None
) -> tuple[int, Any]:
    headers = bearer(token or job["reporterToken"])
    async with http.post(
        f"{queue_url}/api/jobs/{job['jobId']}/events", json=payload, headers=headers
    ) as response:
        return response.status, await response.json()


async def get_job(http: aiohttp.ClientSession, queue_url: str, job_id: str) -> dict[str, Any]:
    async with http.get(f"{queue_url}/api/jobs/{job_id}") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
    return body


BATCH = [
    {"type": "status", "message": "Checking out", "key": "s"},
    {"type": "progress", "step": 1, "totalSteps": 2, "message": "Built", "key": "p1"},
    {"type": "log", "line": "compiling", "key": "l1"},
    {"type": "step", "stepId": "build", "name": "Build", "status": "completed", "key": "st"},
    {"type": "metric", "metrics": [{"key": "tests", "value": 12}, {"key": "ms", "value": 3.5}], "key": "m"},
    {"type": "artifact", "name": "log", "kind": "file", "url": "https://ci.example/log.txt", "key": "a"},
]


async def test_an_external_job_is_reported_and_streamed_exactly(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job = await submit_external(http, queue_url, name="CI", type="ci", steps=2)
    assert job["status"] == "PROCESSING" and job["links"]["events"] == f"/api/jobs/{job['jobId']}/events"
    status, answer = await report(http, queue_url, job, {"events": BATCH})
    assert status == 200, answer
    assert answer["duplicates"] == [] and answer["cancelRequested"] is False and len(answer["ids"]) == 6
    status, again = await report(http, queue_url, job, {"events": BATCH})  # a retry: nothing doubled
    assert status == 200 and again["ids"] == [] and again["duplicates"] == [e["key"] for e in BATCH]
    status, done = await report(http, queue_url, job, {"type": "complete", "result": "green", "key": "end"})
    assert status == 200 and len(done["ids"]) == 1

    events = await collect(http, f"{progress_url}/api/progress/{job['jobId']}")
    assert [e.event for e in events] == [
        "status",
        "status",
        "progress",
        "log",
        "step",
        "metric",
        "artifact",
        "complete",
    ]
    assert [e.id for e in events[1:]] == answer["ids"] + done["ids"]
    assert events[2].data | {"ts": None} == {
        "jobId": job["jobId"], "status": "PROCESSING", "progress": 50, "message": "Built", "step": 1,
        "totalSteps": 2, "ts": None,
    }  # fmt: skip
    assert events[5].data["metrics"] == [{"key": "tests", "value": 12.0}, {"key": "ms", "value": 3.5}]
    assert events[6].data["url"] == "https://ci.example/log.txt"
    state = await get_job(http, queue_url, job["jobId"])
    last = events[-1]
    assert state["status"] == last.data["status"] == "COMPLETED"
    assert state["result"] == last.data["result"] == "green" and state["progress"] == 100
    assert state["lastEventId"] == last.id and state["runner"] == "external" and state["type"] == "ci"

    status, late = await report(http, queue_url, job, {"type": "log", "line": "late"})
    assert status == 409 and late["error"]["details"] == {"status": "COMPLETED"}
    status, retried = await report(
        http, queue_url, job, {"type": "complete", "result": "green", "key": "end"}
    )
    assert status == 200 and retried["duplicates"] == ["end"]  # a retry of the end is no conflict


async def test_invalid_events_are_422_with_the_fields(http: aiohttp.ClientSession, queue_url: str) -> None:
    job = await submit_external(http, queue_url)
    status, answer = await report(
        http, queue_url, job, {"events": [{"type": "log", "line": "ok"}, {"type": "log"}]}
    )
    assert status == 422 and answer["error"]["details"] == {
        "events": {"1": {"line": ["Missing data for required field."]}}
    }
    status, answer = await report(http, queue_url, job, {"type": "reset"})
    assert status == 422 and set(answer["error"]["details"]) == {"type"}
    async with http.post(
        f"{queue_url}/api/jobs/{job['jobId']}/events", data=b"{nope", headers=bearer(job["reporterToken"])
    ) as response:
        assert response.status == 400
    big = {"type": "log", "line": "x" * 8000}
    status, answer = await report(http, queue_url, job, {"events": [big] * 20})
    assert status == 413 and answer["error"]["code"] == "payload_too_large"
    async with http.get(f"{queue_url}/api/jobs/{job['jobId']}") as response:
        assert (await response.json())["lastEventId"] is not None


async def test_the_richer_events_show_in_the_jobs_state_and_its_limits_hold(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job = await submit_external(http, queue_url)
    running = {"type": "step", "stepId": "test", "name": "Test", "status": "running",
               "startedAt": "2026-12-02T10:00:00Z"}  # fmt: skip
    events = [
        running,
        {"type": "metric", "metrics": [{"key": "passed", "value": 10}], "step": 1},
        {"type": "metric", "metrics": [{"key": "passed", "value": 30}], "step": 2},
        {"type": "annotation", "level": "warning", "message": "2 skipped", "title": "Test"},
        {"type": "progress", "progress": 40, "etaSeconds": 90},
    ]
    status, _ = await report(http, queue_url, job, {"events": events})
    assert status == 200
    state = await get_job(http, queue_url, job["jobId"])
    assert state["steps"] == [
        {"stepId": "test", "name": "Test", "status": "running", "startedAt": running["startedAt"]}
    ]
    assert state["metrics"] == {"passed": {"value": 30, "step": 2}}
    assert (state["artifacts"], state["annotations"]) == (0, 1)
    streamed = await collect(http, f"{progress_url}/api/progress/{job['jobId']}", stop_after=6)
    assert [e.event for e in streamed[1:]] == ["step", "metric", "metric", "annotation", "progress"]
    assert streamed[-1].data["etaSeconds"] == 90

    artifact = {"type": "artifact", "name": "a", "url": "https://ci.example/a"}
    status, _ = await report(http, queue_url, job, {"events": [artifact] * 200})
    assert status == 200
    status, answer = await report(http, queue_url, job, {"events": [{"type": "log", "line": "x"}, artifact]})
    assert status == 422
    assert answer["error"]["message"] == "A job has at most 200 artifacts"
    assert answer["error"]["details"] == {"type": "artifact", "most": 200}
    assert (await get_job(http, queue_url, job["jobId"]))["artifacts"] == 200


async def test_the_reporter_token_writes_to_its_own_job_only(
    http: aiohttp.ClientSession, anonymous: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job, other = await submit_external(http, queue_url), await submit_external(http, queue_url)
    status, answer = await report(
        anonymous, queue_url, other, {"type": "log", "line": "x"}, job["reporterToken"]
    )
    assert status == 403 and answer["error"]["details"]["reason"] == "other_job"
    url = f"{queue_url}/api/jobs/{job['jobId']}"
    headers = bearer(job["reporterToken"])
    for method, path in [("GET", ""), ("POST", "/cancel"), ("POST", "/share")]:
        # No identity's credential: refused before any job is looked up.
        async with anonymous.request(method, url + path, headers=headers) as response:
            assert response.status == 401, (method, path)
    async with anonymous.get(f"{queue_url}/api/jobs", headers=headers) as response:
        assert response.status == 401
    async with anonymous.get(f"{progress_url}/api/progress/{job['jobId']}", headers=headers) as response:
        assert response.status in (401, 404)
    async with anonymous.post(f"{url}/events", json={"type": "log", "line": "x"}) as response:
        assert response.status == 401
    async with anonymous.post(
        f"{url}/events", json={"type": "log", "line": "x"}, headers={"Authorization": "Basic x"}
    ) as response:
        assert response.status == 401
    # The owner's own bearer token (an identity) is no reporter token.
    async with http.post(f"{url}/events", json={"type": "log", "line": "x"}) as response:
        assert response.status == 401
    tokens = Tokens(TEST_SECRET_KEY)
    share, _ = tokens.issue(Audience.SHARE, job["jobId"], ttl=60, job=job["jobId"])
    forged, _ = issue_reporter_token(Tokens("another-secret-key-of-at-least-32-chars"), job["jobId"], ttl=60)
    expired, _ = issue_reporter_token(tokens, job["jobId"], ttl=-60)
    for token in (share, forged, expired, "not-a-token"):
        status, answer = await report(anonymous, queue_url, job, {"type": "log", "line": "x"}, token)
        assert status == 401, token


async def test_a_reporter_token_of_a_worker_job_is_403_and_of_no_job_404(
    anonymous: aiohttp.ClientSession, http: aiohttp.ClientSession, queue_url: str
) -> None:
    async with http.post(f"{queue_url}/api/jobs", json={"type": "build", "steps": 1}) as response:
        assert response.status == 202
        worker_job = (await response.json())["jobId"]
    tokens = Tokens(TEST_SECRET_KEY)
    for job_id, expected in ((worker_job, 403), ("0" * 32, 404)):
        job = {"jobId": job_id, "reporterToken": issue_reporter_token(tokens, job_id, ttl=60)[0]}
        status, answer = await report(anonymous, queue_url, job, {"type": "log", "line": "x"})
        assert status == expected, answer
        if expected == 403:
            assert answer["error"]["details"]["reason"] == "not_external"


async def test_an_expired_reporter_token_is_401(
    anonymous: aiohttp.ClientSession, http: aiohttp.ClientSession, queue_url: str
) -> None:
    job = await submit_external(http, queue_url)
    expired, _ = issue_reporter_token(Tokens(TEST_SECRET_KEY), job["jobId"], ttl=-60)
    status, answer = await report(anonymous, queue_url, job, {"type": "log", "line": "x"}, expired)
    assert status == 401 and "expired" in answer["error"]["message"]


async def test_the_token_expires_with_the_time_limit(http: aiohttp.ClientSession, queue_url: str) -> None:
    job = await submit_external(http, queue_url, timeLimitSeconds=600)
    claims = Tokens(TEST_SECRET_KEY).read(job["reporterToken"], Audience.REPORTER)
    assert claims["job"] == claims["sub"] == job["jobId"]
    assert claims["exp"] - claims["iat"] == 600


async def test_cancel_is_told_to_the_reporter_which_ends_the_job(
    http: aiohttp.ClientSession, queue_url: str
) -> None:
    job = await submit_external(http, queue_url)
    async with http.post(f"{queue_url}/api/jobs/{job['jobId']}/cancel") as response:
        assert response.status == 202 and (await response.json())["cancelRequested"] is True
    status, answer = await report(http, queue_url, job, {"type": "log", "line": "stopping"})
    assert status == 200 and answer["cancelRequested"] is True
    status, answer = await report(http, queue_url, job, {"type": "cancelled"})
    assert status == 200
    state = await get_job(http, queue_url, job["jobId"])
    assert state["status"] == "CANCELLED" and state["lastEventId"] == answer["ids"][0]


async def test_a_stalled_external_job_fails_after_its_time_limit(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job = await submit_external(http, queue_url, timeLimitSeconds=1)
    await report(http, queue_url, job, {"type": "progress", "progress": 30})

    async def ended() -> dict[str, Any] | None:
        state = await get_job(http, queue_url, job["jobId"])
        return state if state["status"] == "FAILED" else None

    state = await eventually(ended, "the stalled job failed")
    assert "Time limit of 1s exceeded" in state["error"] and state["progress"] == 30
    events = await collect(http, f"{progress_url}/api/progress/{job['jobId']}")
    assert events[-1].event == "failed" and events[-1].id == state["lastEventId"]


async def test_a_cancel_the_reporter_never_confirms_ends_cancelled_at_the_time_limit(
    http: aiohttp.ClientSession, queue_url: str
) -> None:
    job = await submit_external(http, queue_url, timeLimitSeconds=1)
    async with http.post(f"{queue_url}/api/jobs/{job['jobId']}/cancel") as response:
        assert response.status == 202

    async def ended() -> dict[str, Any] | None:
        state = await get_job(http, queue_url, job["jobId"])
        return state if state["status"] != "PROCESSING" else None

    state = await eventually(ended, "the unconfirmed cancel ended the job")
    assert state["status"] == "CANCELLED" and "did not end the job" in state["error"]


async def test_external_jobs_are_listed_and_shared_like_any_other(
    http: aiohttp.ClientSession, anonymous: aiohttp.ClientSession, queue_url: str
) -> None:
    job = await submit_external(http, queue_url, name="listed")
    async with http.get(f"{queue_url}/api/jobs") as response:
        assert job["jobId"] in [listed["jobId"] for listed in (await response.json())["jobs"]]
    async with http.post(f"{queue_url}/api/jobs/{job['jobId']}/share") as response:
        share = await response.json()
    async with anonymous.get(f"{queue_url}{share['links']['self']}") as response:
        assert response.status == 200 and (await response.json())["runner"] == "external"


async def test_reports_per_job_are_limited(
    jobprogress_make_stack: Any, jobprogress_http: aiohttp.ClientSession
) -> None:
    stack: Stack = jobprogress_make_stack(("job-queue-service",), JOBPROGRESS_REPORTS_PER_MINUTE="2")
    url = stack.url("job-queue-service")
    job = await submit_external(jobprogress_http, url)
    statuses = []
    for _ in range(3):
        async with jobprogress_http.post(
            f"{url}/api/jobs/{job['jobId']}/events",
            json={"type": "log", "line": "x"},
            headers=bearer(job["reporterToken"]),
        ) as response:
            statuses.append(response.status)
            retry_after = response.headers.get("Retry-After")
    assert statuses == [200, 200, 429] and retry_after is not None and int(retry_after) >= 1
