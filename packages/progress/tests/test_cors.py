"""Cross-origin access to progress-service, in process (real Redis, no Consul): the module
for every origin, a job's stream and status for the allowed origins only, nothing else for
anyone, and never credentials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobprogress_core.settings import Settings
from jobprogress_testing import free_port
from progress_service.app import create_app

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
)
ClientFactory = Callable[..., Any]


async def make_client(aiohttp_client: ClientFactory, settings: Settings) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))  # type: ignore[arg-type]
    return client


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, jobprogress_settings: Callable[..., Settings]
) -> TestClient[Any, Any]:
    settings = jobprogress_settings(
        "progress-service",
        JOBPROGRESS_CORS_ORIGINS=f"{ALLOWED}, http://127.0.0.1:9",
        CONSUL_HTTP_ADDR=f"127.0.0.1:{free_port()}",  # nobody there: the service serves on
    )
    return await make_client(aiohttp_client, settings)


def cors_of(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in CORS_HEADERS if name in headers}


def preflight(origin: str, method: str = "GET") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization",
    }


@pytest.mark.parametrize(
    "path", ["/api/progress/some-job", "/api/progress", "/api/progress/mine", "/api/jobs/some-job"]
)
async def test_an_allowed_origin_gets_its_preflight_answered(client: TestClient[Any, Any], path: str) -> None:
    async with client.options(path, headers=preflight(ALLOWED)) as response:
        assert response.status == 204
        assert cors_of(response.headers) == {
            "Access-Control-Allow-Origin": ALLOWED,
            "Access-Control-Allow-Methods": "GET",
            "Access-Control-Allow-Headers": "Authorization, Last-Event-ID",
        }
        assert response.headers["Vary"] == "Origin"
        assert int(response.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/progress/some-job", preflight(OTHER)),
        ("/api/jobs/some-job", preflight(OTHER)),
        ("/api/progress/some-job", preflight("null")),
        ("/api/progress/some-job", preflight(ALLOWED.upper())),  # exact, as browsers send it
        ("/api/jobs/some-job", preflight(ALLOWED, "POST")),
        ("/api/progress/some-job", preflight(ALLOWED, "DELETE")),
    ],
)
async def test_another_origin_or_method_is_refused_without_cors_headers(
    client: TestClient[Any, Any], path: str, headers: dict[str, str]
) -> None:
    async with client.options(path, headers=headers) as response:
        assert response.status == 403
        assert (await response.json())["error"]["details"]["reason"] == "cross_origin"
        assert cors_of(response.headers) == {}


async def test_the_stream_answers_an_allowed_origin_even_with_an_error(client: TestClient[Any, Any]) -> None:
    # An unknown job: the 404 must be readable by the page, or it could not say why.
    async with client.get("/api/progress/no-such-job", headers={"Origin": ALLOWED}) as response:
        assert response.status == 404
        assert cors_of(response.headers) == {
            "Access-Control-Allow-Origin": ALLOWED,
            "Access-Control-Expose-Headers": "Retry-After, X-Request-Id",
        }
        assert "Origin" in response.headers["Vary"]
    async with client.get("/api/progress/no-such-job", headers={"Origin": OTHER}) as response:
        assert response.status == 404
        assert cors_of(response.headers) == {}
        assert "Origin" in response.headers["Vary"]  # a cache must not reuse the other answer


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/client/index.html"),
        ("GET", "/api/progress/a/b"),
        ("GET", "/api/progressive"),
        ("OPTIONS", "/api/jobs"),
        ("OPTIONS", "/api/jobs/some-job/cancel"),
        ("OPTIONS", "/api/tokens"),
        ("OPTIONS", "/health"),
    ],
)
async def test_other_routes_get_no_cors_headers(client: TestClient[Any, Any], method: str, path: str) -> None:
    headers = preflight(ALLOWED) if method == "OPTIONS" else {"Origin": ALLOWED}
    async with client.request(method, path, headers=headers) as response:
        assert response.status != 204
        assert cors_of(response.headers) == {}


async def test_the_module_is_javascript_for_every_origin_without_credentials(
    client: TestClient[Any, Any],
) -> None:
    for origin in (ALLOWED, OTHER, None):
        headers = {"Origin": origin} if origin else {}
        async with client.get("/client/jobprogress.js", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert cors_of(response.headers) == {"Access-Control-Allow-Origin": "*"}
            assert "export function watchJob" in await response.text()
    # The page itself keeps its policy: scripts from its own origin only.
    async with client.get("/client/index.html") as response:
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_without_the_setting_no_origin_gets_anything(
    aiohttp_client: ClientFactory, jobprogress_settings: Callable[..., Settings]
) -> None:
    settings = jobprogress_settings("progress-service", CONSUL_HTTP_ADDR=f"127.0.0.1:{free_port()}")
    client = await make_client(aiohttp_client, settings)
    async with client.options("/api/progress/some-job", headers=preflight(ALLOWED)) as response:
        assert response.status == 403
        assert cors_of(response.headers) == {}
    async with client.get("/api/progress/no-such-job", headers={"Origin": ALLOWED}) as response:
        assert response.status == 404
        assert cors_of(response.headers) == {}
        assert "Vary" not in response.headers
