"""job-queue-service's REST API over HTTP: validation, errors, the page."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from jobprogress_testing import SERVICE_MODULES, Stack

pytestmark = pytest.mark.stack


async def post(
    http: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(url, **kwargs) as response:
        return response.status, await response.json(), response


async def test_submit_answers_202_with_location_and_links(
    http: aiohttp.ClientSession, queue_url: str
) -> None:
    status, body, response = await post(http, f"{queue_url}/api/jobs", json={"type": "report", "name": "Q3"})
    assert status == 202
    job_id = body["jobId"]
    assert body == {
        "jobId": job_id,
        "status": "QUEUED",
        "links": {"self": f"/api/jobs/{job_id}", "progress": f"/api/progress/{job_id}"},
    }
    assert response.headers["Location"] == f"/api/jobs/{job_id}"
    async with http.get(f"{queue_url}/api/jobs/{job_id}") as got:
        job = await got.json()
    assert job["name"] == "Q3" and job["type"] == "report"
    assert job["params"] == {
        "steps": 4,
        "durationSeconds": 120.0,
        "failAtStep": None,
        "timeLimitSeconds": None,
    }
    assert "owner" not in job


@pytest.mark.parametrize(
    "body",
    [b"{bad json", b"", b"\xff\xfe", b"[1, 2", b'{"steps": 1}}'],
    ids=["broken", "empty", "binary", "open", "trailing"],
)
async def test_malformed_json_is_400(http: aiohttp.ClientSession, queue_url: str, body: bytes) -> None:
    status, answer, _ = await post(
        http, f"{queue_url}/api/jobs", data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert answer["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "body",
    [b"[" * 30_000, b'{"steps": ' + b"9" * 5000 + b"}", b'{"steps": 1e999999}'],
    ids=["deep", "huge-int", "huge-float"],
)
async def test_pathological_json_is_a_4xx_never_a_5xx(
    http: aiohttp.ClientSession, queue_url: str, body: bytes
) -> None:
    status, answer, _ = await post(http, f"{queue_url}/api/jobs", data=body)
    assert status in (400, 422), answer
    assert answer["error"]["code"] in ("bad_request", "validation_failed")


async def test_name_with_a_lone_surrogate_is_422(http: aiohttp.ClientSession, queue_url: str) -> None:
    status, answer, _ = await post(http, f"{queue_url}/api/jobs", data=b'{"name": "x\\ud800"}')
    assert status == 422
    assert set(answer["error"]["details"]) == {"name"}


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"steps": 0}, {"steps"}),
        ({"steps": "4"}, {"steps"}),
        ({"steps": True}, {"steps"}),
        ({"durationSeconds": -1, "type": "nope"}, {"durationSeconds", "type"}),
        ({"steps": 2, "failAtStep": 3}, {"failAtStep"}),
        ({"colour": "red"}, {"colour"}),
        ({"name": ""}, {"name"}),
        ([1, 2], {"_schema"}),
    ],
)
async def test_invalid_fields_are_422_naming_them(
    http: aiohttp.ClientSession, queue_url: str, payload: Any, fields: set[str]
) -> None:
    status, answer, _ = await post(http, f"{queue_url}/api/jobs", json=payload)
    assert status == 422
    assert answer["error"]["code"] == "validation_failed"
    assert set(answer["error"]["details"]) == fields


async def test_errors_are_json(http: aiohttp.ClientSession, queue_url: str) -> None:
    async with http.get(f"{queue_url}/api/jobs/{'0' * 32}") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    async with http.put(f"{queue_url}/api/jobs") as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
        assert (await response.json())["error"]["code"] == "method_not_allowed"
    async with http.get(f"{queue_url}/nowhere") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    status, answer, _ = await post(http, f"{queue_url}/api/jobs", data=b"{" + b" " * 200_000 + b"}")
    assert status == 413
    assert answer["error"]["code"] == "payload_too_large"


async def test_health_and_metrics(http: aiohttp.ClientSession, jobprogress_stack: Stack) -> None:
    for service in SERVICE_MODULES:
        url = jobprogress_stack.url(service)
        async with http.get(f"{url}/health") as response:
            assert response.status == 200
            body = await response.json()
            assert body["status"] == "passing" and body["service"] == service
            assert body["checks"]["redis"] == "ok"
            if service == "worker-service":
                assert body["checks"]["consumer"] == "ok"
        async with http.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert "jobprogress_http_requests_total" in await response.text()


async def test_page_is_served_and_root_redirects(http: aiohttp.ClientSession, progress_url: str) -> None:
    async with http.get(f"{progress_url}/", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/client/index.html"
    async with http.get(f"{progress_url}/client/index.html") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert 'role="progressbar"' in page and 'src="app.js"' in page
    async with http.get(f"{progress_url}/client/app.js") as response:
        assert response.status == 200
        assert "EventSource" in await response.text()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOBPROGRESS_HANDLERS", "no_such_module.jobs:handlers"),
        ("JOBPROGRESS_HANDLERS", "worker_service.simulated:nothing_here"),
        ("JOBPROGRESS_PORT", "eighty"),
        ("REDIS_URL", "http://localhost"),
        ("JOBPROGRESS_ENV", "staging"),
        ("CONSUL_HTTP_ADDR", "127.0.0.1:notaport"),
        ("JOBPROGRESS_SSE_HEARTBEAT_SECONDS", "0"),
    ],
)
def test_bad_setting_stops_the_process_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker_service" if variable == "JOBPROGRESS_HANDLERS" else "progress_service",
        ],
        env={"PATH": "/usr/bin:/bin", variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
