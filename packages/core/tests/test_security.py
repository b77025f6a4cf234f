"""Tokens, the owner policy and the same-origin rule, without the services."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobprogress_core.browsers import same_origin_middleware
from jobprogress_core.errors import error_middleware
from jobprogress_core.security import (
    IDENTITY_COOKIE,
    Audience,
    InvalidToken,
    JobAccess,
    OwnerPolicy,
    Permission,
    Tokens,
    new_identity,
)

SECRET = "unit-test-secret-key-" * 4  # long enough for HS512 too (a token of the wrong algorithm)
ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


def test_a_token_reads_back_only_for_its_own_audience_and_key() -> None:
    tokens = Tokens(SECRET)
    identity = new_identity()
    token, expires = tokens.issue(Audience.API, identity, ttl=60, job="j")
    assert abs(expires - (time.time() + 60)) < 2
    claims = tokens.read(token, Audience.API)
    assert (claims["sub"], claims["job"]) == (identity, "j")
    assert tokens.identity(token, Audience.API) == identity
    for other in (Audience.BROWSER, Audience.SHARE):
        with pytest.raises(InvalidToken):
            tokens.read(token, other)
        assert tokens.identity(token, other) is None
    with pytest.raises(InvalidToken):
        Tokens("another-secret-of-the-same-sort-and-length").read(token, Audience.API)


def test_expired_forged_and_unsigned_tokens_are_refused() -> None:
    tokens = Tokens(SECRET)
    now = int(time.time())
    claims = {"aud": Audience.SHARE.value, "sub": new_identity(), "iat": now - 100}
    with pytest.raises(InvalidToken) as expired:
        tokens.read(jwt.encode({**claims, "exp": now - 50}, SECRET, algorithm="HS256"), Audience.SHARE)
    assert expired.value.expired
    for token in (
        jwt.encode({**claims, "exp": now + 50}, key=None, algorithm="none"),
        jwt.encode(claims, SECRET, algorithm="HS256"),  # no expiry
        jwt.encode({**claims, "exp": now + 50}, SECRET, algorithm="HS512"),
        "a.b.c",
        "",
    ):
        with pytest.raises(InvalidToken) as refused:
            tokens.read(token, Audience.SHARE)
        assert not refused.value.expired


def test_a_token_read_again_is_still_refused_once_expired_or_for_another_audience() -> None:
    now = [time.time()]
    tokens = Tokens(SECRET, clock=lambda: now[0])
    token, expires = tokens.issue(Audience.API, new_identity(), ttl=60)
    claims = tokens.read(token, Audience.API)
    claims["sub"] = "changed by a caller"
    assert tokens.read(token, Audience.API)["sub"] != "changed by a caller"  # a copy each time
    with pytest.raises(InvalidToken):
        tokens.read(token, Audience.SHARE)  # checked for that audience, not taken from the first read
    now[0] = expires + 4  # within the leeway
    assert tokens.read(token, Audience.API)["exp"] == expires
    now[0] = expires + 6
    with pytest.raises(InvalidToken) as expired:
        tokens.read(token, Audience.API)
    assert expired.value.expired


def test_an_identity_is_32_hex_digits_or_nothing() -> None:
    tokens = Tokens(SECRET)
    assert tokens.identity(tokens.issue(Audience.API, "owner:{x}", ttl=60)[0], Audience.API) is None
    assert len({new_identity() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("identity", "permission", "shared", "allowed"),
    [
        ("a" * 32, Permission.READ, None, True),
        ("a" * 32, Permission.CANCEL, None, True),
        ("a" * 32, Permission.SHARE, None, True),
        ("b" * 32, Permission.READ, None, False),
        ("b" * 32, Permission.CANCEL, None, False),
        (None, Permission.READ, None, False),
        (None, Permission.READ, "job", True),
        ("b" * 32, Permission.READ, "job", True),
        ("b" * 32, Permission.CANCEL, "job", False),
        ("b" * 32, Permission.SHARE, "job", False),
        (None, Permission.READ, "other-job", False),
    ],
)
async def test_the_owner_may_do_anything_and_a_share_only_read_its_job(
    identity: str | None, permission: Permission, shared: str | None, allowed: bool
) -> None:
    access = JobAccess(owner="a" * 32, job_id="job", shared_job_id=shared)
    assert await OwnerPolicy().permits(identity, permission, access) is allowed
    assert await OwnerPolicy().permits("a" * 32, permission, context=None) is False


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[error_middleware, same_origin_middleware])
    app.router.add_route("*", "/", ok)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("headers", "cookie", "status"),
    [
        ({}, False, 200),  # a script: no browser, no cookie
        ({}, True, 403),  # the cookie, and nothing from a browser on where it comes from
        ({"Origin": "http://evil.example"}, False, 403),
        ({"Origin": "null"}, True, 403),
        ({"Origin": "ftp://{host}"}, True, 403),
        ({"Origin": "http://{host}"}, True, 200),
        ({"Origin": "https://{host}"}, True, 200),
        ({"Sec-Fetch-Site": "same-origin"}, True, 200),
        ({"Sec-Fetch-Site": "same-site"}, True, 403),
        ({"Sec-Fetch-Site": "cross-site"}, False, 403),
    ],
)
async def test_unsafe_requests_must_come_from_this_origin(
    client: TestClient[Any, Any], headers: dict[str, str], cookie: bool, status: int
) -> None:
    host = f"{client.host}:{client.port}"
    sent = {name: value.replace("{host}", host) for name, value in headers.items()}
    if cookie:
        sent["Cookie"] = f"{IDENTITY_COOKIE}=x"
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        async with client.request(method, "/", headers=sent) as response:
            assert response.status == status, (method, sent)
            if status == 403:
                assert (await response.json())["error"]["details"]["reason"] == "cross_site"
    async with client.get("/", headers={**sent, "Origin": "http://evil.example"}) as response:
        assert response.status == 200  # reading is never refused for its origin
