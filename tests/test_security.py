"""Who may see and touch a job, over HTTP as users would: identities (cookie, bearer),
share links, and the same-origin rule. One test per defence."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobprogress_client import collect_events
from jobprogress_core.model import Job
from jobprogress_core.security import IDENTITY_COOKIE, Audience, Tokens, new_identity
from jobprogress_core.store import JobStore
from jobprogress_testing import TEST_ENV, Stack, bearer_headers, eventually

pytestmark = pytest.mark.stack

QUICK_JOB = {"type": "build", "steps": 2, "durationSeconds": 0.2}
SLOW_JOB = {"type": "build", "steps": 4, "durationSeconds": 600}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(method, url, **kwargs) as response:
        body = await response.read()
        return response.status, json.loads(body) if body else None, response


async def submit(http: aiohttp.ClientSession, base: str, params: dict[str, Any], **kwargs: Any) -> str:
    status, body, _ = await call(http, "POST", f"{base}/api/jobs", json=params, **kwargs)
    assert status == 202, body
    return str(body["jobId"])


@pytest.fixture
async def browser(progress_url: str) -> Any:
    """A browser-like client: no bearer token, a cookie jar, the page loaded once."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{progress_url}/client/index.html") as page:
            assert page.status == 200
        yield session


def same_origin(progress_url: str) -> dict[str, str]:
    return {"Origin": progress_url}


async def test_another_identity_gets_404_on_status_stream_cancel_and_list(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, SLOW_JOB)
    stranger = bearer_headers()
    for base in (queue_url, progress_url):  # directly, and through the page's forwarding
        status, body, _ = await call(http, "GET", f"{base}/api/jobs/{job_id}", headers=stranger)
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body, _ = await call(http, "POST", f"{base}/api/jobs/{job_id}/cancel", headers=stranger)
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body, _ = await call(http, "POST", f"{base}/api/jobs/{job_id}/share", headers=stranger)
        assert status == 404
        status, body, _ = await call(http, "GET", f"{base}/api/jobs", headers=stranger)
        assert (status, body["jobs"]) == (200, [])
    status, body, _ = await call(http, "GET", f"{progress_url}/api/progress/{job_id}", headers=stranger)
    assert (status, body["error"]["code"]) == (404, "not_found")
    # The 404 is the same as for a job that does not exist at all.
    status, missing, _ = await call(http, "GET", f"{queue_url}/api/jobs/{'0' * 32}", headers=stranger)
    assert status == 404 and set(missing["error"]) == set(body["error"])

    # The owner still sees it, and it was not cancelled.
    status, body, _ = await call(http, "GET", f"{queue_url}/api/jobs/{job_id}")
    assert status == 200 and body["status"] in ("QUEUED", "PROCESSING") and not body["cancelRequested"]
    status, body, _ = await call(http, "GET", f"{queue_url}/api/jobs")
    assert [job["jobId"] for job in body["jobs"]] == [job_id]
    await call(http, "POST", f"{queue_url}/api/jobs/{job_id}/cancel")


async def test_no_identity_is_401_for_submit_and_list_and_404_for_a_job(
    queue_url: str, progress_url: str, http: aiohttp.ClientSession
) -> None:
    job_id = await submit(http, queue_url, QUICK_JOB)
    async with aiohttp.ClientSession() as anonymous:
        for base in (queue_url, progress_url):
            status, body, response = await call(anonymous, "POST", f"{base}/api/jobs", json=QUICK_JOB)
            assert (status, body["error"]["code"]) == (401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            status, body, _ = await call(anonymous, "GET", f"{base}/api/jobs")
            assert status == 401
            status, body, _ = await call(anonymous, "GET", f"{base}/api/jobs/{job_id}")
            assert status == 404
        tampered = bearer_headers()["Authorization"] + "x"
        for bad in ("Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer ", tampered):
            status, body, _ = await call(
                anonymous, "POST", f"{queue_url}/api/jobs", json=QUICK_JOB, headers={"Authorization": bad}
            )
            assert status == 401, bad


async def test_the_page_cookie_is_a_stable_identity_the_stream_accepts(
    browser: aiohttp.ClientSession, progress_url: str
) -> None:
    [cookie] = [c for c in browser.cookie_jar if c.key == IDENTITY_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert int(cookie["max-age"]) >= 86400

    job_id = await submit(browser, progress_url, QUICK_JOB, headers=same_origin(progress_url))
    events = await collect_events(browser, f"{progress_url}/api/progress/{job_id}", timeout=30)
    assert events[-1].event == "complete"

    # A reload renews the cookie for the same identity: the job is still this browser's.
    async with browser.get(f"{progress_url}/client/index.html") as page:
        assert IDENTITY_COOKIE in page.cookies
    status, body, _ = await call(browser, "GET", f"{progress_url}/api/jobs")
    assert [job["jobId"] for job in body["jobs"]] == [job_id]

    # Another browser is another identity.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        await other.get(f"{progress_url}/client/index.html")
        status, body, _ = await call(other, "GET", f"{progress_url}/api/jobs")
        assert (status, body["jobs"]) == (200, [])
        status, _, _ = await call(other, "GET", f"{progress_url}/api/progress/{job_id}")
        assert status == 404


async def test_tokens_carry_the_identity_they_were_issued_for(
    browser: aiohttp.ClientSession, progress_url: str, queue_url: str
) -> None:
    job_id = await submit(browser, progress_url, QUICK_JOB, headers=same_origin(progress_url))
    status, issued, _ = await call(
        browser, "POST", f"{progress_url}/api/tokens", headers=same_origin(progress_url)
    )
    assert status == 201 and issued["tokenType"] == "Bearer"
    bearer = {"Authorization": f"Bearer {issued['token']}"}
    async with aiohttp.ClientSession(headers=bearer) as script:  # the same person, from a script
        status, body, _ = await call(script, "GET", f"{queue_url}/api/jobs")
        assert [job["jobId"] for job in body["jobs"]] == [job_id]

    async with aiohttp.ClientSession() as newcomer:
        status, fresh, _ = await call(newcomer, "POST", f"{queue_url}/api/tokens")
        assert status == 201 and fresh["identity"] != issued["identity"]
        status, body, _ = await call(
            newcomer, "GET", f"{queue_url}/api/jobs", headers={"Authorization": f"Bearer {fresh['token']}"}
        )
        assert (status, body["jobs"]) == (200, [])
        # An invalid token does not quietly become a new identity.
        status, body, _ = await call(
            newcomer, "POST", f"{queue_url}/api/tokens", headers={"Authorization": "Bearer expired.or.forged"}
        )
        assert status == 401


async def share(http: aiohttp.ClientSession, base: str, job_id: str, **body: Any) -> dict[str, Any]:
    status, answer, _ = await call(http, "POST", f"{base}/api/jobs/{job_id}/share", json=body or None)
    assert status == 201, answer
    return dict(answer)


async def test_a_share_link_streams_and_reads_one_job_but_never_cancels(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str
) -> None:
    job_id = await submit(http, queue_url, QUICK_JOB)
    other_job = await submit(http, queue_url, SLOW_JOB)
    link = await share(http, queue_url, job_id, expiresInSeconds=600)
    assert link["links"]["page"].startswith(f"/client/index.html?job={job_id}&share=")
    expires = time.time() + 600
    assert link["expiresAt"][:16] == time.strftime("%Y-%m-%dT%H:%M", time.gmtime(expires))[:16]

    async with aiohttp.ClientSession() as viewer:  # no identity at all
        events = await collect_events(viewer, f"{progress_url}{link['links']['progress']}", timeout=30)
        assert [e.event for e in events][-1] == "complete"
        status, body, _ = await call(viewer, "GET", f"{queue_url}{link['links']['self']}")
        assert (status, body["jobId"]) == (200, job_id)
        token = link["token"]
        status, body, _ = await call(viewer, "POST", f"{queue_url}/api/jobs/{job_id}/cancel?share={token}")
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body, _ = await call(viewer, "POST", f"{queue_url}/api/jobs/{job_id}/share?share={token}")
        assert status == 403
        # One job only: the same token says nothing about another job of the same owner.
        for url in (f"{queue_url}/api/jobs/{other_job}", f"{progress_url}/api/progress/{other_job}"):
            status, body, _ = await call(viewer, "GET", f"{url}?share={token}")
            assert status == 404
        status, body, _ = await call(viewer, "POST", f"{queue_url}/api/jobs/{other_job}/cancel?share={token}")
        assert status == 404
    status, body, _ = await call(http, "GET", f"{queue_url}/api/jobs/{other_job}")
    assert body["status"] in ("QUEUED", "PROCESSING") and not body["cancelRequested"]
    await call(http, "POST", f"{queue_url}/api/jobs/{other_job}/cancel")


def forged(claims: dict[str, Any], key: str = TEST_ENV["JOBPROGRESS_SECRET_KEY"]) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


async def test_a_share_link_stops_working_when_expired_or_tampered(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str, jobprogress_identity: str
) -> None:
    job_id = await submit(http, queue_url, QUICK_JOB)
    token = (await share(http, queue_url, job_id))["token"]
    now = int(time.time())
    base = {"aud": Audience.SHARE.value, "sub": jobprogress_identity, "job": job_id, "iat": now}
    header, payload, signature = token.split(".")
    bad = {
        "expired": forged({**base, "iat": now - 120, "exp": now - 60}),
        "signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "other key": forged({**base, "exp": now + 600}, key="some-other-secret-key-of-enough-length"),
        "bearer as share": Tokens(TEST_ENV["JOBPROGRESS_SECRET_KEY"]).issue(
            Audience.API, jobprogress_identity, ttl=600
        )[0],
        "no expiry": forged(base),
        "alg none": jwt.encode({**base, "exp": now + 600}, key=None, algorithm="none"),
        "garbage": "not-a-token",
    }
    async with aiohttp.ClientSession() as viewer:
        for name, value in bad.items():
            for url in (f"{progress_url}/api/progress/{job_id}", f"{queue_url}/api/jobs/{job_id}"):
                status, body, _ = await call(viewer, "GET", url, params={"share": value})
                assert status == 403, (name, url)
                expected = "share_expired" if name == "expired" else "share_invalid"
                assert body["error"]["details"]["reason"] == expected, name
        # The owner is the owner, whatever stale link sits beside.
        status, _, _ = await call(
            http, "GET", f"{queue_url}/api/jobs/{job_id}", params={"share": bad["expired"]}
        )
        assert status == 200
        # The genuine token still works; the bounds on its lifetime are validated.
        status, _, _ = await call(viewer, "GET", f"{queue_url}/api/jobs/{job_id}", params={"share": token})
        assert status == 200
    for seconds in (10, 10**9, "600", True):
        status, body, _ = await call(
            http, "POST", f"{queue_url}/api/jobs/{job_id}/share", json={"expiresInSeconds": seconds}
        )
        assert (status, list(body["error"]["details"])) == (422, ["expiresInSeconds"]), seconds


async def test_a_cross_origin_post_is_refused_and_changes_nothing(
    browser: aiohttp.ClientSession, progress_url: str, http: aiohttp.ClientSession, queue_url: str
) -> None:
    refused = [
        {"Origin": "http://evil.example"},
        {"Origin": progress_url.replace("127.0.0.1", "localhost")},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {},  # the cookie, with no word from the browser on where the request comes from
    ]
    for headers in refused:
        status, body, _ = await call(
            browser, "POST", f"{progress_url}/api/jobs", json=QUICK_JOB, headers=headers
        )
        assert (status, body["error"]["details"]["reason"]) == (403, "cross_site"), headers
    job_id = await submit(browser, progress_url, SLOW_JOB, headers={"Sec-Fetch-Site": "same-origin"})
    status, body, _ = await call(
        browser, "POST", f"{progress_url}/api/jobs/{job_id}/cancel", headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    status, body, _ = await call(browser, "GET", f"{progress_url}/api/jobs")
    assert [(job["jobId"], job["cancelRequested"]) for job in body["jobs"]] == [(job_id, False)]
    await call(browser, "POST", f"{progress_url}/api/jobs/{job_id}/cancel", headers=same_origin(progress_url))

    # Scripts with a bearer token send no Origin, and need none.
    await submit(http, queue_url, QUICK_JOB)
    await submit(http, progress_url, QUICK_JOB)


async def streams_answered(http: aiohttp.ClientSession, progress_url: str) -> float:
    """Streams progress-service has finished answering (counted once their handler returned)."""
    async with http.get(f"{progress_url}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "jobprogress_http_requests_total"
        and sample.labels["route"] == "/api/progress/{job_id}"
    )


async def test_tokens_never_reach_the_logs(
    http: aiohttp.ClientSession, queue_url: str, progress_url: str, jobprogress_stack: Stack
) -> None:
    job_id = await submit(http, queue_url, QUICK_JOB)
    link = await share(http, queue_url, job_id)
    answered = await streams_answered(http, progress_url)
    async with aiohttp.ClientSession() as viewer:
        await collect_events(viewer, f"{progress_url}{link['links']['progress']}", timeout=30)
        status, issued, _ = await call(viewer, "POST", f"{queue_url}/api/tokens")
        assert status == 201

    # The stream's handler ends after the client has seen its end: the logs are read once it has.
    async def stream_done() -> bool:
        return await streams_answered(http, progress_url) > answered

    await eventually(stream_done, "the shared stream answered to its end")
    bearer = http.headers["Authorization"].split()[1]
    logs = "".join(path.read_text(errors="replace") for path in jobprogress_stack.workdir.glob("*.log"))
    assert "share link issued" in logs  # the log is there, and says what happened
    for secret in (link["token"], issued["token"], bearer):
        assert secret not in logs
        assert secret.split(".")[2] not in logs


async def test_submissions_per_identity_are_limited_across_instances(
    jobprogress_stack: Stack, http: aiohttp.ClientSession
) -> None:
    limit = {"JOBPROGRESS_SUBMISSIONS_PER_MINUTE": "3"}
    first = jobprogress_stack.start_service("job-queue-service", **limit)
    second = jobprogress_stack.start_service("job-queue-service", **limit)
    try:
        for base in (first.url, second.url, first.url):
            await submit(http, base, QUICK_JOB)
        for base in (first.url, second.url):  # the count is shared through Redis
            status, body, response = await call(http, "POST", f"{base}/api/jobs", json=QUICK_JOB)
            assert (status, body["error"]["code"]) == (429, "too_many_requests")
            retry_after = int(response.headers["Retry-After"])
            assert 1 <= retry_after <= 20  # one submission per 20 s at 3 a minute
            assert body["error"]["details"]["retryAfter"] == retry_after
        status, body, _ = await call(http, "GET", f"{first.url}/api/jobs")
        assert len(body["jobs"]) == 3  # the refused ones left nothing behind
        await submit(http, second.url, QUICK_JOB, headers=bearer_headers())  # others are not held up
    finally:
        first.stop()
        second.stop()


async def test_new_identities_per_address_are_limited(jobprogress_stack: Stack) -> None:
    queue = jobprogress_stack.start_service("job-queue-service", JOBPROGRESS_NEW_IDENTITIES_PER_MINUTE="2")
    try:
        async with aiohttp.ClientSession() as newcomer:
            identities = set()
            for _ in range(2):
                status, body, _ = await call(newcomer, "POST", f"{queue.url}/api/tokens")
                assert status == 201
                identities.add(body["identity"])
                token = body["token"]
            assert len(identities) == 2
            status, body, response = await call(newcomer, "POST", f"{queue.url}/api/tokens")
            assert status == 429 and int(response.headers["Retry-After"]) >= 1
            # Through the page's origin, behind a proxy it trusts: the identity is minted where
            # the client's address is known (this one's budget is whole; 127.0.0.1's is spent).
            progress = jobprogress_stack.start_service(
                "progress-service",
                JOBPROGRESS_NEW_IDENTITIES_PER_MINUTE="2",
                JOBPROGRESS_TRUSTED_PROXY_HOPS="1",
            )
            proxied = {"X-Forwarded-For": "203.0.113.9"}
            try:
                statuses = [
                    (await call(newcomer, "POST", f"{progress.url}/api/tokens", headers=proxied))[0]
                    for _ in range(3)
                ]
                assert statuses == [201, 201, 429]
            finally:
                progress.stop()
            # Renewing the token of an identity one has is not a new identity.
            status, body, _ = await call(
                newcomer, "POST", f"{queue.url}/api/tokens", headers={"Authorization": f"Bearer {token}"}
            )
            assert status == 201 and body["identity"] in identities
    finally:
        queue.stop()


async def test_concurrent_streams_per_identity_are_limited_across_instances(
    jobprogress_stack: Stack, http: aiohttp.ClientSession, new_job: Any, stack_store: JobStore
) -> None:
    limit = {"JOBPROGRESS_STREAMS_PER_IDENTITY": "2"}
    first = jobprogress_stack.start_service("progress-service", **limit)
    second = jobprogress_stack.start_service("progress-service", **limit)
    job_id = await new_job()
    opened: list[aiohttp.ClientResponse] = []
    try:
        for base in (first.url, second.url):
            response = await http.get(f"{base}/api/progress/{job_id}")
            assert response.status == 200
            await response.content.readuntil(b"\n\n")
            opened.append(response)
        for base in (first.url, second.url):
            status, body, response = await call(http, "GET", f"{base}/api/progress/{job_id}")
            assert (status, body["error"]["code"]) == (429, "too_many_requests")
            assert int(response.headers["Retry-After"]) >= 1
        # Another identity is not held up...
        other = new_identity()
        other_job = Job.new("build", {}, owner=other)
        await stack_store.create(other_job, {"status": "QUEUED"})
        async with http.get(
            f"{first.url}/api/progress/{other_job.id}", headers=bearer_headers(other)
        ) as theirs:
            assert theirs.status == 200
        # ...and a stream that ends gives its place back.
        opened.pop().close()

        async def place_given_back() -> bool:
            async with http.get(f"{second.url}/api/progress/{job_id}") as response:
                return response.status == 200

        await eventually(place_given_back, "the closed stream's place given back")
    finally:
        for response in opened:
            response.close()
        first.stop()
        second.stop()


async def test_every_response_carries_the_page_hardening_headers(
    http: aiohttp.ClientSession, progress_url: str, queue_url: str, new_job: Any
) -> None:
    job_id = await new_job()
    responses = [
        http.get(f"{progress_url}/client/index.html"),
        http.get(f"{progress_url}/client/app.js"),
        http.get(f"{queue_url}/api/jobs"),
        http.get(f"{queue_url}/api/jobs/nope"),
        http.get(f"{progress_url}/health"),
    ]
    for request in responses:
        async with request as response:
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] == "no-referrer"  # share tokens stay in the URL bar
    async with http.get(f"{progress_url}/api/progress/{job_id}") as stream:
        assert stream.status == 200 and stream.headers["X-Content-Type-Options"] == "nosniff"
        assert stream.headers["Content-Type"] == "text/event-stream"


@pytest.mark.parametrize("service", ["job-queue-service", "worker-service", "progress-service"])
@pytest.mark.parametrize(
    ("secret", "why"),
    [(None, "is missing"), ("change-me", "is the default value"), ("short-secret", "too short")],
)
def test_production_refuses_to_start_without_a_real_secret(
    service: str, secret: str | None, why: str
) -> None:
    env = {"PATH": "/usr/bin:/bin", "JOBPROGRESS_ENV": "production"}
    if secret is not None:
        env["JOBPROGRESS_SECRET_KEY"] = secret
    module = service.replace("-service", "_service").replace("-", "_")
    result = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert "JOBPROGRESS_SECRET_KEY" in result.stderr and why in result.stderr
    assert "Traceback" not in result.stderr
    if secret is not None:
        assert secret not in result.stderr  # not even a bad secret is shown
