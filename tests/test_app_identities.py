"""Identities the product's backend signs (app JWTs), against the real stack: the product's
user owns what its backend submits and watches it from the browser; every refused token is a
401 or 403 JSON error, never a 500 and never another user's job; a stream ends at its
token's expiry and resumes exactly with a fresh one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jobprogress_client import collect_events
from jobprogress_testing import TEST_ENV, Stack

pytestmark = pytest.mark.stack

SECRET = "the-products-own-secret-of-32-chars-or-more"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def app_token(sub: str = "alice", *, scope: str | None = None, ttl: int = 600, **claims: Any) -> str:
    now = int(time.time())
    payload = {"aud": "jobprogress", "sub": sub, "iat": now, "exp": now + ttl, **claims}
    if scope is not None:
        payload["scope"] = scope
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(method: str, url: str, *, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        headers = bearer(token) if token else {}
        async with http.request(method, url, headers=headers, **kwargs) as response:
            return response.status, await response.json(content_type=None)


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack that accepts the product's tokens: HS256 with its secret, ES256 with its key."""
    keys = {"JOBPROGRESS_APP_JWT_SECRET": SECRET, "JOBPROGRESS_APP_JWT_PUBLIC_KEY": PUBLIC.decode()}
    stack = Stack(tmp_path_factory.mktemp("product"), env={**TEST_ENV, **keys})
    with stack.running():
        for service in ("job-queue-service", "worker-service", "progress-service"):
            stack.start_service(service)
        yield stack


QUICK = {"type": "build", "steps": 2, "durationSeconds": 0.4}


async def test_the_products_user_owns_what_its_backend_submits(product: Stack) -> None:
    queue, progress = product.url("job-queue-service"), product.url("progress-service")
    status, answer = await call("POST", f"{queue}/api/jobs", token=app_token(scope="submit"), json=QUICK)
    assert status == 202, answer
    job_id = answer["jobId"]
    # The user's browser, with a read-only token of its own (EventSource: in the query).
    reader = app_token(scope="read")
    async with aiohttp.ClientSession() as browser:
        events = await collect_events(browser, f"{progress}/api/progress/{job_id}?access_token={reader}")
    assert events[-1].event == "complete"
    status, job = await call("GET", f"{queue}/api/jobs/{job_id}", token=reader)
    assert (status, job["status"]) == (200, "COMPLETED")
    status, listing = await call("GET", f"{progress}/api/jobs", token=reader)  # through the page's API
    assert status == 200 and [j["jobId"] for j in listing["jobs"]] == [job_id]
    # ES256 signs the same user.
    es256 = jwt.encode(
        {"aud": "jobprogress", "sub": "alice", "exp": int(time.time()) + 600}, KEY, algorithm="ES256"
    )
    assert (await call("GET", f"{queue}/api/jobs/{job_id}", token=es256))[0] == 200

    # Another user of the product sees none of it.
    bob = app_token("bob")
    assert (await call("GET", f"{queue}/api/jobs/{job_id}", token=bob))[0] == 404
    assert (await call("GET", f"{progress}/api/progress/{job_id}?access_token={bob}"))[0] == 404
    assert (await call("GET", f"{queue}/api/jobs", token=bob))[1]["jobs"] == []


async def test_a_tokens_scope_bounds_what_it_may_do(product: Stack) -> None:
    queue, progress = product.url("job-queue-service"), product.url("progress-service")
    status, answer = await call("POST", f"{queue}/api/jobs", token=app_token(), json=QUICK)
    assert status == 202
    job_id = answer["jobId"]
    read_only, submit_only = app_token(scope="read"), app_token(scope="submit")
    refused = [
        ("POST", f"{queue}/api/jobs", read_only, {"json": QUICK}),
        ("POST", f"{progress}/api/jobs", read_only, {"json": QUICK}),  # forwarded: the scope goes along
        ("POST", f"{queue}/api/jobs/{job_id}/cancel", read_only, {}),
        ("GET", f"{queue}/api/jobs/{job_id}", submit_only, {}),
        ("GET", f"{queue}/api/jobs", submit_only, {}),
        ("GET", f"{progress}/api/progress/{job_id}", submit_only, {}),
        ("GET", f"{queue}/api/jobs/{job_id}", app_token(scope="report"), {}),
    ]
    for method, url, token, kwargs in refused:
        status, body = await call(method, url, token=token, **kwargs)
        assert (status, body["error"]["details"]["reason"]) == (403, "scope"), (method, url)
    # A job of another user stays a 404 whatever the scope: the scope reveals nothing.
    assert (await call("GET", f"{queue}/api/jobs/{job_id}", token=app_token("carol", scope="submit")))[
        0
    ] == 404
    # An app token is not exchanged for one of ours (which would carry none of its limits).
    status, body = await call("POST", f"{queue}/api/tokens", token=read_only)
    assert status == 403, body


def refused_tokens() -> dict[str, str]:
    now = int(time.time())
    public_pem = PUBLIC.decode()
    return {
        "wrong audience": app_token(aud="someone-else"),
        "expired": app_token(ttl=-60),
        "not yet valid": app_token(nbf=now + 600),
        "no exp": jwt.encode({"aud": "jobprogress", "sub": "alice"}, SECRET, algorithm="HS256"),
        "exp too far ahead": app_token(ttl=30 * 86_400),
        "wrong key": jwt.encode(
            {"aud": "jobprogress", "sub": "alice", "exp": now + 600}, "x" * 40, algorithm="HS256"
        ),
        "alg none": jwt.encode(
            {"aud": "jobprogress", "sub": "alice", "exp": now + 600}, None, algorithm="none"
        ),
        "HS256 with the public key": hs256_with(
            public_pem, {"aud": "jobprogress", "sub": "alice", "exp": now + 600}
        ),
        "odd bytes in sub": app_token("al\x00ice"),
        "sub too long": app_token("a" * 129),
        "unknown scope": app_token(scope="read admin"),
        "garbage": "eyJhbGciOi.not-a-jwt",
    }


def hs256_with(key: str, claims: dict[str, Any]) -> str:
    """HS256 signed with ``key`` as the HMAC secret, by hand (PyJWT refuses a PEM there)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing}.{b64(hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest())}"


async def test_every_refused_token_is_a_401_json_error_never_a_job(product: Stack) -> None:
    queue, progress = product.url("job-queue-service"), product.url("progress-service")
    status, answer = await call("POST", f"{queue}/api/jobs", token=app_token(), json=QUICK)
    assert status == 202, answer
    job_id = answer["jobId"]
    for name, token in refused_tokens().items():
        for method, url, kwargs in (
            ("GET", f"{queue}/api/jobs/{job_id}", {"token": token}),
            ("GET", f"{queue}/api/jobs", {"token": token}),
            ("POST", f"{queue}/api/jobs", {"token": token, "json": QUICK}),
            ("GET", f"{progress}/api/progress/{job_id}", {"params": {"access_token": token}}),
            ("GET", f"{progress}/api/jobs/{job_id}", {"token": token}),
            # No job there: still a 401, so a bad token cannot even learn which jobs exist.
            ("GET", f"{queue}/api/jobs/{'0' * 32}", {"token": token}),
            ("GET", f"{progress}/api/progress/{'0' * 32}", {"params": {"access_token": token}}),
        ):
            status, body = await call(method, url, **kwargs)
            assert status == 401, (name, method, url, status, body)
            assert body["error"]["code"] == "unauthorized" and body["error"]["details"]["reason"], name


async def test_app_tokens_are_refused_where_no_app_key_is_set(progress_url: str, queue_url: str) -> None:
    status, body = await call("GET", f"{queue_url}/api/jobs", token=app_token())
    assert (status, body["error"]["details"]["reason"]) == (401, "app_disabled")
    status, body = await call(
        "GET", f"{progress_url}/api/progress/{'0' * 32}", params={"access_token": app_token()}
    )
    assert (status, body["error"]["details"]["reason"]) == (401, "app_disabled")


async def test_a_stream_ends_at_its_tokens_expiry_and_resumes_exactly_with_a_fresh_one(
    product: Stack,
) -> None:
    queue, progress = product.url("job-queue-service"), product.url("progress-service")
    job = {"type": "build", "steps": 20, "durationSeconds": 12}
    status, answer = await call("POST", f"{queue}/api/jobs", token=app_token(), json=job)
    assert status == 202, answer
    job_id = answer["jobId"]
    url = f"{progress}/api/progress/{job_id}"
    terminal = ("complete", "failed", "cancelled")
    async with aiohttp.ClientSession() as browser:
        # Valid for two seconds (and the leeway): the stream ends when it expires.
        first = await collect_events(browser, f"{url}?access_token={app_token(scope='read', ttl=2)}")
        assert first, "the stream sent nothing before the token expired"
        seen = list(first)
        while seen[-1].event not in terminal:  # the browser reconnects with a fresh token
            fresh = app_token(scope="read")
            seen += await collect_events(browser, f"{url}?access_token={fresh}", last_event_id=seen[-1].id)
    assert first[-1].event not in terminal
    async with aiohttp.ClientSession() as again:
        whole = await collect_events(again, f"{url}?access_token={app_token(scope='read')}")
    assert [e.id for e in seen] == [e.id for e in whole]  # no gap, no repeat
    assert whole[-1].event == "complete"


async def test_the_owners_app_token_with_scope_report_reports_to_its_external_job(product: Stack) -> None:
    queue = product.url("job-queue-service")
    status, job = await call(
        "POST",
        f"{queue}/api/jobs",
        token=app_token(scope="submit"),
        json={"runner": "external", "name": "etl"},
    )
    assert status == 202, job
    events = f"{queue}/api/jobs/{job['jobId']}/events"
    status, answer = await call(
        "POST", events, token=app_token(scope="report"), json={"type": "log", "line": "hi"}
    )
    assert status == 200 and len(answer["ids"]) == 1, answer
    status, answer = await call(
        "POST", events, token=app_token(scope="read"), json={"type": "log", "line": "x"}
    )
    assert (status, answer["error"]["details"]["reason"]) == (403, "scope")
    status, _ = await call(
        "POST", events, token=app_token("bob", scope="report"), json={"type": "log", "line": "x"}
    )
    assert status == 404
    status, answer = await call(
        "POST", events, token=app_token(ttl=-60, scope="report"), json={"type": "log", "line": "x"}
    )
    assert status == 401, answer


async def test_the_owners_app_token_reports_to_no_job_a_worker_runs(product: Stack) -> None:
    queue = product.url("job-queue-service")
    status, job = await call("POST", f"{queue}/api/jobs", token=app_token(scope="submit"), json=QUICK)
    assert status == 202, job
    status, answer = await call(
        "POST",
        f"{queue}/api/jobs/{job['jobId']}/events",
        token=app_token(scope="report"),
        json={"type": "log", "line": "x"},
    )
    assert (status, answer["error"]["details"]["reason"]) == (403, "not_external")
    status, _ = await call(
        "POST", f"{queue}/api/jobs/{'0' * 32}/events", token=app_token(scope="report"), json={"type": "log"}
    )
    assert status == 404
