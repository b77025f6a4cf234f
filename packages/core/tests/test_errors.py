"""The error middleware: every failure becomes a JSON error, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError

from jobprogress_core.errors import Conflict, ServiceUnavailable, ValidationFailed, error_middleware


async def make_client(aiohttp_client: Any) -> Any:
    async def validation(request: web.Request) -> web.Response:
        raise ValidationFailed("bad", details={"steps": ["too big"]})

    async def conflict(request: web.Request) -> web.Response:
        raise Conflict("already done")

    async def unavailable(request: web.Request) -> web.Response:
        raise ServiceUnavailable("later", retry_after=7)

    async def redis_down(request: web.Request) -> web.Response:
        raise RedisConnectionError("connection refused")

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = web.Application(middlewares=[error_middleware])
    for path, handler in [
        ("/validation", validation),
        ("/conflict", conflict),
        ("/unavailable", unavailable),
        ("/redis", redis_down),
        ("/crash", crash),
    ]:
        app.router.add_get(path, handler)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("path", "status", "code", "retry_after"),
    [
        ("/validation", 422, "validation_failed", None),
        ("/conflict", 409, "conflict", None),
        ("/unavailable", 503, "service_unavailable", "7"),
        ("/redis", 503, "service_unavailable", "5"),
        ("/crash", 500, "internal_error", None),
        ("/missing", 404, "not_found", None),
    ],
)
async def test_errors_are_json(
    aiohttp_client: Any,
    caplog: pytest.LogCaptureFixture,
    path: str,
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    client = await make_client(aiohttp_client)
    with caplog.at_level(logging.WARNING):
        response = await client.get(path)
    body = await response.json()
    assert response.status == status
    assert body["error"]["code"] == code and body["error"]["message"]
    assert response.headers.get("Retry-After") == retry_after
    assert "secret internals" not in await response.text()
    if path == "/crash":
        assert "Traceback" in caplog.text and "secret internals" in caplog.text
