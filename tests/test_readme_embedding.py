"""The README's snippets of "Embedding jobprogress in your product", run as they are written
against a stack that accepts the product's tokens: the backend's in Python, the page's in
headless Chromium on the product's own origin, with the backend's token endpoint."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page

from jobprogress_client import ApiError, collect_events
from jobprogress_testing import TEST_ENV, Stack, eventually, free_port

pytestmark = pytest.mark.stack

README = Path(__file__).resolve().parents[1] / "README.md"
SECRET = "the-readme-products-secret-of-32-chars-at-least"
PRODUCT_PORT = free_port()
PRODUCT = f"http://127.0.0.1:{PRODUCT_PORT}"

#: What the README's page snippet takes as the page's own: the job, its widgets and helpers.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>your product</title></head><body>
<progress id="bar" max="100"></progress> <span id="label"></span> <span id="badge"></span>
<pre id="log"></pre>
<script>
const jobId = new URL(location.href).searchParams.get("job");
const [bar, label, badge] = ["bar", "label", "badge"].map((id) => document.getElementById(id));
Object.assign(window, {{ lines: [], done: null, shownErrors: [] }});
function appendLine(level, line) {{
  window.lines.push([level, line]);
  document.getElementById("log").append(`${{level}} ${{line}}\\n`);
}}
const showDone = (result) => (window.done = result);
const showError = (message) => window.shownErrors.push(message);
</script>
{snippet}
</body></html>
"""


def readme_blocks(heading: str, language: str) -> list[str]:
    section = README.read_text().split(f"### {heading}", 1)[1].split("\n### ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def backend_blocks() -> str:
    blocks = readme_blocks("The backend: sign a token, submit or report", "python")
    assert len(blocks) == 3, "the README's backend section has its three snippets"
    return "\n\n".join(blocks)


def page_snippet(progress_url: str) -> str:
    (block,) = readme_blocks("The page: `/client/jobprogress.js`", "html")
    assert "https://progress.example.com/" in block
    return block.replace("https://progress.example.com", progress_url)


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**TEST_ENV, "JOBPROGRESS_APP_JWT_SECRET": SECRET, "JOBPROGRESS_CORS_ORIGINS": PRODUCT}
    stack = Stack(tmp_path_factory.mktemp("readme"), env=env)
    with stack.running():
        for service in ("job-queue-service", "worker-service", "progress-service"):
            stack.start_service(service)
        yield stack


@pytest.fixture
def snippets(product: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("JOBPROGRESS_APP_JWT_SECRET", SECRET)
    monkeypatch.setenv("JOBPROGRESS_URL", product.url("progress-service"))
    namespace: dict[str, Any] = {}
    exec(compile(backend_blocks(), str(README), "exec"), namespace)
    return namespace


async def events_as(snippets: dict[str, Any], user: str, job_id: str) -> list[Any]:
    token = snippets["jobprogress_token"](user)  # a read token, as the page gets it
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        return await collect_events(http, f"{snippets['JOBPROGRESS_URL']}/api/progress/{job_id}", timeout=60)


async def test_the_backend_submits_for_its_user_and_the_user_watches(snippets: dict[str, Any]) -> None:
    job_id = await snippets["start_report"]("ann")
    events = await events_as(snippets, "ann", job_id)
    assert events[-1].event == "complete"
    with pytest.raises(ApiError, match="HTTP 404"):
        await events_as(snippets, "someone-else", job_id)


async def test_the_backend_runs_a_job_itself_and_reports_it(snippets: dict[str, Any]) -> None:
    job_id = await snippets["import_rows"]("ann", ["a.csv", "b.csv"])
    events = await events_as(snippets, "ann", job_id)
    assert [e.data["line"] for e in events if e.event == "log"] == ["imported a.csv", "imported b.csv"]
    assert [e.data["step"] for e in events if e.event == "progress"] == [1, 2]
    assert (events[-1].event, events[-1].data["result"]) == ("complete", "2 rows imported")


@pytest.fixture
async def product_site(snippets: dict[str, Any]) -> AsyncIterator[None]:
    """The product's web server: its page with the README's snippet, and the endpoint that
    snippet fetches its token from (the README's backend signing one for the user ann)."""

    async def page(request: web.Request) -> web.Response:
        snippet = page_snippet(snippets["JOBPROGRESS_URL"])
        return web.Response(text=PAGE.format(snippet=snippet), content_type="text/html")

    async def token(request: web.Request) -> web.Response:
        return web.Response(text=snippets["jobprogress_token"]("ann"))

    app = web.Application()
    app.router.add_get("/job.html", page)
    app.router.add_get("/jobprogress-token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PRODUCT_PORT).start()
    yield
    await runner.cleanup()


async def test_the_readme_page_follows_the_job_its_backend_started(
    page: Page, snippets: dict[str, Any], product_site: None
) -> None:
    job_id = await snippets["start_report"]("ann")
    await page.goto(f"{PRODUCT}/job.html?job={job_id}")
    done = await eventually(lambda: page.evaluate("window.done"), "the page's showDone", timeout=60)

    events = await events_as(snippets, "ann", job_id)
    assert done == events[-1].data["result"]
    logged = [[e.data.get("level", "info"), e.data["line"]] for e in events if e.event == "log"]
    assert await page.evaluate("window.lines") == logged
    last_progress = [e.data for e in events if e.event == "progress"][-1]
    assert await page.evaluate("bar.value") == last_progress["progress"]
    assert await page.evaluate("label.textContent") == last_progress["message"]
    assert await page.evaluate(f"localStorage.getItem('job:{job_id}')") == events[-1].id
    assert await eventually(lambda: page.evaluate("badge.textContent === 'closed'"), "the closed badge")
    assert await page.evaluate("window.shownErrors") == []


async def test_the_readme_page_stops_watching_when_the_user_leaves(
    page: Page, snippets: dict[str, Any], product_site: None
) -> None:
    headers = {"Authorization": f"Bearer {snippets['jobprogress_token']('ann', 'submit')}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        body = {"type": "build", "steps": 10, "durationSeconds": 60}
        async with http.post(f"{snippets['JOBPROGRESS_URL']}/api/jobs", json=body) as response:
            assert response.status == 202, await response.text()
            job_id = (await response.json())["jobId"]
        await page.goto(f"{PRODUCT}/job.html?job={job_id}")
        await eventually(lambda: page.evaluate("badge.textContent === 'live'"), "the live badge")
        await page.evaluate("dispatchEvent(new Event('pagehide'))")
        await eventually(lambda: page.evaluate("badge.textContent === 'closed'"), "the closed badge")
        assert await page.evaluate("window.done") is None
        async with http.post(f"{snippets['JOBPROGRESS_URL']}/api/jobs/{job_id}/cancel") as response:
            assert response.status in (200, 202), await response.text()
