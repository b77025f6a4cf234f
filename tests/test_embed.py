"""A product's own page embeds ``/client/jobprogress.js`` from progress-service, on another
origin, in real headless Chromium: it follows its user's job with app JWTs its backend signs
(renewed at every reconnect: they expire within seconds) through a restart of
progress-service, and sees the job's log exactly (no gap, no duplicate) to its end. A page
on an origin that is not allowed loads the module but reads nothing, and only the stream and
the status ever carry CORS headers."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from playwright.async_api import Page

from jobprogress_client import collect_events
from jobprogress_testing import TEST_ENV, Stack, eventually, free_port

pytestmark = pytest.mark.stack

SECRET = "the-products-own-secret-of-32-chars-or-more"
#: The product's site, allowed by JOBPROGRESS_CORS_ORIGINS, and a site that is not.
PRODUCT_PORT, STRANGER_PORT = free_port(), free_port()
PRODUCT, STRANGER = f"http://127.0.0.1:{PRODUCT_PORT}", f"http://127.0.0.1:{STRANGER_PORT}"

#: The product's page: the module straight from progress-service, a token from its backend.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>product</title>
<script type="module">
import {{ watchJob, fetchJob }} from "{progress}/client/jobprogress.js";
const jobId = new URL(location.href).searchParams.get("job");
const getToken = async () => (await fetch(`/token?sub={sub}`)).text();
Object.assign(window, {{ seen: [], states: [], errors: [], result: null }});
window.jobStatus = fetchJob(jobId, {{ baseUrl: "{progress}", getToken }}).then(
  (job) => job.status,
  (error) => `${{error.status}} ${{error.code}}`,
);
window.handle = watchJob(jobId, {{
  baseUrl: "{progress}",
  getToken,
  on: {{ any: (data, event) => window.seen.push([event.id, event.type, data.jobId]) }},
  onState: (state) => window.states.push(state),
  onError: (error) => window.errors.push({{ code: error.code, status: error.status, fatal: error.fatal }}),
}});
window.handle.done.then((why) => (window.result = why));
</script></head><body>product</body></html>
"""


def app_token(sub: str, scope: str, ttl: int = 600) -> str:
    now = int(time.time())
    claims = {"aud": "jobprogress", "sub": sub, "exp": now + ttl, "scope": scope}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def product_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**TEST_ENV, "JOBPROGRESS_APP_JWT_SECRET": SECRET, "JOBPROGRESS_CORS_ORIGINS": PRODUCT}
    stack = Stack(tmp_path_factory.mktemp("embed"), env=env)
    with stack.running():
        for service in ("job-queue-service", "worker-service", "progress-service"):
            stack.start_service(service)
        yield stack


class Site:
    """The product's web server (its page and its backend's token endpoint), answering on
    both ports: the same page is on the allowed origin and on a stranger's."""

    def __init__(self) -> None:
        self.tokens_issued = 0

    async def page(self, request: web.Request) -> web.Response:
        progress = request.query["progress"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", progress)
        sub = html.escape(request.query.get("sub", "alice"))
        return web.Response(text=PAGE.format(progress=progress, sub=sub), content_type="text/html")

    async def token(self, request: web.Request) -> web.Response:
        """What the product's backend does for its signed-in user: a read-only JWT, short-lived
        here so that the stream ends at its expiry and the page must fetch a fresh one."""
        self.tokens_issued += 1
        return web.Response(text=app_token(request.query["sub"], "read", ttl=5))


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    site = Site()
    app = web.Application()
    app.router.add_get("/embed.html", site.page)
    app.router.add_get("/token", site.token)
    runner = web.AppRunner(app)
    await runner.setup()
    for port in (PRODUCT_PORT, STRANGER_PORT):
        await web.TCPSite(runner, "127.0.0.1", port).start()
    yield site
    await runner.cleanup()


async def submit(stack: Stack, sub: str = "alice", **body: Any) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url('job-queue-service')}/api/jobs",
            json={"type": "build", **body},
            headers={"Authorization": f"Bearer {app_token(sub, 'submit')}"},
        ) as response,
    ):
        assert response.status == 202, await response.text()
        job_id: str = (await response.json())["jobId"]
        return job_id


async def log_of(progress_url: str, job_id: str, sub: str = "alice") -> list[list[str]]:
    """The job's whole log, read afresh: ``[id, type, jobId]`` per event."""
    async with aiohttp.ClientSession() as http:
        url = f"{progress_url}/api/progress/{job_id}?access_token={app_token(sub, 'read')}"
        return [[event.id, event.event, event.data["jobId"]] for event in await collect_events(http, url)]


async def page_value(page: Page, name: str) -> Any:
    return await page.evaluate(f"window.{name}")


async def test_a_products_page_follows_its_users_job_through_a_restart_exactly(
    page: Page, product_stack: Stack, site: Site
) -> None:
    progress = product_stack.start_service("progress-service")  # this test's own, restarted below
    job_id = await submit(product_stack, steps=6, durationSeconds=9)
    await page.goto(f"{PRODUCT}/embed.html?job={job_id}&progress={progress.url}")

    assert await page.evaluate("window.jobStatus") in ("QUEUED", "PROCESSING")
    await eventually(lambda: page_value(page, "seen.filter((e) => e[1] === 'log').length"), "a log line")
    assert await page_value(page, "handle.state") == "live"
    progress.stop()
    await eventually(lambda: page_value(page, "handle.state === 'reconnecting'"), "the page reconnecting")
    replacement = product_stack.start_service("progress-service", port=progress.port)
    try:
        result = await eventually(lambda: page_value(page, "result"), "the job's end", timeout=60)
        assert result == "complete"
        seen = await page_value(page, "seen")
        whole = await log_of(replacement.url, job_id)
    finally:
        replacement.stop()
    assert seen == whole  # nothing lost, nothing twice, in order
    assert whole[-1][1] == "complete" and len({event[0] for event in seen}) == len(seen)
    assert {event[2] for event in seen} == {job_id}
    states = await page_value(page, "states")
    assert states[0] == "connecting" and states[-1] == "closed"
    assert states.count("live") >= 2  # the restart (and expiring tokens) made it reconnect
    # One token per connect (and the status call): tokens of 5 s lived through a 9 s job.
    assert site.tokens_issued >= 3
    assert await page_value(page, "handle.lastEventId") == whole[-1][0]


async def test_a_page_on_an_origin_not_allowed_reads_nothing(
    page: Page, product_stack: Stack, site: Site
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    progress = product_stack.url("progress-service")
    job_id = await submit(product_stack, steps=2, durationSeconds=0.2)
    await page.goto(f"{STRANGER}/embed.html?job={job_id}&progress={progress}")

    # The module loads (it is public), but neither the status nor the stream may be read.
    assert await page.evaluate("window.jobStatus") == "0 network"
    errors = await eventually(lambda: page_value(page, "errors"), "the module's error")
    assert errors[0] == {"code": "network", "status": 0, "fatal": False}
    assert await page_value(page, "seen") == []
    assert await page_value(page, "handle.state") in ("connecting", "reconnecting")
    assert any("CORS" in line or "Access-Control-Allow-Origin" in line for line in console), console
    await page.evaluate("window.handle.stop()")
    assert await page.evaluate("window.handle.done") == "stopped"
    assert await page_value(page, "handle.state") == "closed"


async def test_another_users_job_is_a_fatal_404_on_the_allowed_origin(
    page: Page, product_stack: Stack, site: Site
) -> None:
    progress = product_stack.url("progress-service")
    job_id = await submit(product_stack, sub="bob", steps=1, durationSeconds=0.1)
    await page.goto(f"{PRODUCT}/embed.html?job={job_id}&progress={progress}&sub=alice")
    assert await page.evaluate("window.jobStatus") == "404 not_found"
    assert await page.evaluate("window.handle.done") == "error"
    assert await page_value(page, "errors") == [{"code": "not_found", "status": 404, "fatal": True}]
    assert await page_value(page, "states") == ["connecting", "closed"]
    assert await page_value(page, "seen") == []


async def test_only_the_stream_and_the_status_carry_cors_headers(product_stack: Stack) -> None:
    progress, queue = product_stack.url("progress-service"), product_stack.url("job-queue-service")
    job_id = await submit(product_stack, steps=1, durationSeconds=0.1)
    reader = {"Authorization": f"Bearer {app_token('alice', 'read submit')}"}
    async with aiohttp.ClientSession() as http:

        async def cors(method: str, url: str, origin: str = PRODUCT, **headers: str) -> dict[str, str]:
            async with http.request(method, url, headers={"Origin": origin, **reader, **headers}) as response:
                await response.read()
                assert response.status < 500, (url, response.status)
                return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}

        status = await cors("GET", f"{progress}/api/jobs/{job_id}")
        assert status["Access-Control-Allow-Origin"] == PRODUCT
        assert "Access-Control-Allow-Credentials" not in status
        stream = await cors("GET", f"{progress}/api/progress/{job_id}")
        assert stream["Access-Control-Allow-Origin"] == PRODUCT
        assert await cors("GET", f"{progress}/api/jobs/{job_id}", origin=STRANGER) == {}
        for method, url in [
            ("GET", f"{progress}/api/jobs"),
            ("POST", f"{progress}/api/jobs/{job_id}/share"),
            ("GET", f"{progress}/api/openapi.json"),
            ("GET", f"{progress}/health"),
            ("GET", f"{progress}/client/index.html"),
            ("GET", f"{queue}/api/jobs/{job_id}"),  # job-queue-service itself: never
            ("OPTIONS", f"{queue}/api/jobs/{job_id}"),
        ]:
            headers = {"Access-Control-Request-Method": "GET"} if method == "OPTIONS" else {}
            assert await cors(method, url, **headers) == {}, url
