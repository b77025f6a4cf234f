"""Web Push when a job ends, against the real stack: a push service of the test's own on
127.0.0.1 checks each message as a real one would (the VAPID JWT's signature, ``aud``,
``exp``, ``sub``) and decrypts it with the browser keys the test made, and a 410 from it
makes the service forget that subscription."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from jobprogress_core.keys import Keys
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.vapid import b64url, b64url_decode, public_key_b64url
from jobprogress_testing import Stack, eventually

from .push_fakes import PUSH_TTL, SUBJECT, Browser, PushService, Received

pytestmark = pytest.mark.stack


async def subscribe(http: aiohttp.ClientSession, base: str, browser: Browser) -> None:
    async with http.post(f"{base}/api/push/subscriptions", json=browser.subscription()) as response:
        assert response.status == 201, await response.text()


async def run_job(http: aiohttp.ClientSession, base: str, **params: Any) -> str:
    body = {"type": "build", "name": "Nightly build", "steps": 1, "durationSeconds": 0.2, **params}
    async with http.post(f"{base}/api/jobs", json=body) as response:
        assert response.status == 202, await response.text()
        job_id: str = (await response.json())["jobId"]
    return job_id


def check_vapid(received: Received, vapid_key: ec.EllipticCurvePrivateKey, origin: str) -> None:
    authorization = received.headers["Authorization"]
    assert Vapid02.verify(authorization)  # py-vapid's own reading of RFC 8292
    params = dict(part.split("=", 1) for part in authorization.removeprefix("vapid ").split(","))
    assert params["k"] == public_key_b64url(vapid_key)
    claims = jwt.decode(params["t"], vapid_key.public_key(), algorithms=["ES256"], audience=origin)
    assert claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 86_400


async def test_a_job_end_is_pushed_encrypted_and_signed_and_a_gone_subscription_is_forgotten(
    push_stack: Stack,
    push_service: tuple[PushService, TestServer],
    vapid_key: ec.EllipticCurvePrivateKey,
    jobprogress_http: aiohttp.ClientSession,
    jobprogress_identity: str,
) -> None:
    service, server = push_service
    page = push_stack.url("progress-service")  # the page's origin: forwarded to job-queue-service
    async with jobprogress_http.get(f"{page}/api/push/key") as response:
        assert await response.json() == {"enabled": True, "publicKey": public_key_b64url(vapid_key)}
    kept, gone = (
        Browser.new(str(server.make_url("/push/ok/1"))),
        Browser.new(str(server.make_url("/push/gone/1"))),
    )
    await subscribe(jobprogress_http, page, kept)
    await subscribe(jobprogress_http, page, gone)

    job_id = await run_job(jobprogress_http, page)
    await eventually(lambda: len(service.received) == 2, "both subscriptions pushed to")

    origin = f"http://127.0.0.1:{server.port}"
    by_path = {received.path: received for received in service.received}
    message = by_path["/push/ok/1"]
    check_vapid(message, vapid_key, origin)
    assert message.headers["Content-Encoding"] == "aes128gcm"
    assert message.headers["TTL"] == str(PUSH_TTL)
    assert message.headers["Topic"] == job_id and message.headers["Urgency"] == "normal"
    assert kept.read(message.body) == {
        "jobId": job_id,
        "name": "Nightly build",
        "status": "COMPLETED",
        "result": "Build succeeded: all 1 steps passed",
        "url": f"/client/index.html?job={job_id}",
    }
    assert gone.read(by_path["/push/gone/1"].body)["jobId"] == job_id

    assert push_stack.redis_url is not None
    settings = Settings.from_env("job-queue-service", {"REDIS_URL": push_stack.redis_url})
    redis = create_redis(settings)
    key = Keys(settings.key_prefix, settings.partitions).push_subscriptions(jobprogress_identity)

    async def forgotten() -> bool:
        return await redis.hlen(key) == 1  # type: ignore[misc]

    try:
        await eventually(forgotten, "the gone subscription forgotten")
    finally:
        await redis.aclose()

    failing = await run_job(jobprogress_http, page, steps=2, failAtStep=1)
    await eventually(lambda: len(service.received) == 3, "the failed job pushed to the kept subscription")
    last = service.received[-1]
    assert last.path == "/push/ok/1"
    ended = kept.read(last.body)
    assert (
        ended["jobId"] == failing and ended["status"] == "FAILED" and ended["error"] and "result" not in ended
    )

    async def counted() -> str | None:
        async with jobprogress_http.get(f"{push_stack.url('job-queue-service')}/metrics") as response:
            text = await response.text()
        lines = [line for line in text.splitlines() if line.startswith("jobprogress_push_messages_total{")]
        return "\n".join(lines) if any('outcome="gone"' in line for line in lines) else None

    metrics = await eventually(counted, "the push outcomes counted")
    assert 'outcome="sent"} 2.0' in metrics and 'outcome="gone"} 1.0' in metrics


async def test_subscriptions_are_checked_and_only_taken_from_our_own_pages(
    push_stack: Stack, jobprogress_http: aiohttp.ClientSession
) -> None:
    page = push_stack.url("progress-service")
    browser = Browser.new("http://127.0.0.1:9/push/ok/1")
    bad = browser.subscription()
    bad["keys"]["auth"] = b64url(b64url_decode(bad["keys"]["auth"])[:8])
    async with jobprogress_http.post(f"{page}/api/push/subscriptions", json=bad) as response:
        assert response.status == 422
        error = (await response.json())["error"]
        assert error["code"] == "validation_failed" and set(error["details"]) == {"keys"}
    async with jobprogress_http.post(
        f"{page}/api/push/subscriptions", json={**browser.subscription(), "endpoint": "https://10.0.0.1/x"}
    ) as response:
        assert response.status == 422 and "endpoint" in (await response.json())["error"]["details"]
    async with jobprogress_http.post(
        f"{page}/api/push/subscriptions",
        json=browser.subscription(),
        headers={"Origin": "https://evil.example"},
    ) as response:
        assert (
            response.status == 403 and (await response.json())["error"]["details"]["reason"] == "cross_site"
        )
    direct = f"{push_stack.url('job-queue-service')}/api/push/subscriptions"
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.post(direct, json=browser.subscription()) as response,
    ):
        assert response.status == 401
    await subscribe(jobprogress_http, page, browser)
    for removed in (True, False):  # DELETE is idempotent
        async with jobprogress_http.delete(
            f"{page}/api/push/subscriptions", json={"endpoint": browser.endpoint}
        ) as response:
            assert response.status == 200 and await response.json() == {"removed": removed}


async def test_without_vapid_keys_push_is_off_and_says_so(
    jobprogress_http: aiohttp.ClientSession, progress_url: str
) -> None:
    async with jobprogress_http.get(f"{progress_url}/api/push/key") as response:
        assert response.status == 200 and await response.json() == {"enabled": False}
    subscription = Browser.new("http://127.0.0.1:9/push/ok/1").subscription()
    for method in ("POST", "DELETE"):
        async with jobprogress_http.request(
            method, f"{progress_url}/api/push/subscriptions", json=subscription
        ) as response:
            assert response.status == 404
            error = (await response.json())["error"]
            assert error["code"] == "push_disabled" and "VAPID" in error["message"]
