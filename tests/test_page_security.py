"""The page in real headless Chromium: its identity cookie, job data shown as text and never
as markup, and a Content-Security-Policy that lets the page itself run."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page

from jobprogress_core.model import EventType
from jobprogress_core.security import IDENTITY_COOKIE
from jobprogress_core.store import JobStore

pytestmark = pytest.mark.stack

HOSTILE = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2"><b>bold</b>'


async def test_a_log_line_with_markup_shows_as_text_through_a_share_link(
    page: Page, http: aiohttp.ClientSession, progress_url: str, stack_store: JobStore, new_job: Any
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    job_id = await new_job()
    await stack_store.append(job_id, EventType.LOG, {"level": "info", "line": HOSTILE})
    await stack_store.finish(job_id, EventType.COMPLETE, result=f"done {HOSTILE}")
    async with http.post(f"{progress_url}/api/jobs/{job_id}/share") as response:
        assert response.status == 201
        link = (await response.json())["links"]["page"]

    await page.goto(f"{progress_url}{link}")
    log = page.locator("#log")
    await log.get_by_text(HOSTILE, exact=False).wait_for(timeout=15_000)

    assert HOSTILE in await log.inner_text()
    assert await log.locator("img, script, b").count() == 0
    assert await page.evaluate("window.pwned") is None
    # The outcome is shown by the terminal event, which the page handles after the log line.
    await page.locator("#outcome").wait_for(state="visible", timeout=15_000)
    assert "done <script>" in await page.locator("#outcome").inner_text()
    assert await page.evaluate("document.querySelectorAll('script').length") == 1  # app.js only
    assert not [line for line in console if "Content Security Policy" in line or "pageerror" in line], console


async def test_without_the_link_the_job_is_someone_elses(page: Page, progress_url: str, new_job: Any) -> None:
    job_id = await new_job()  # the http client's job; this browser is another identity
    await page.goto(f"{progress_url}/client/index.html?job={job_id}")
    outcome = page.locator("#outcome")
    await outcome.wait_for(state="visible", timeout=15_000)
    assert "not yours" in await outcome.inner_text()
    assert await page.locator("#connection").inner_text() == "closed"


async def test_the_page_works_on_its_cookie_alone(page: Page, progress_url: str) -> None:
    """No token anywhere: the page's identity cookie carries the POST (same origin) and the
    EventSource, and another browser cannot open the job."""
    await page.goto(f"{progress_url}/client/index.html")
    [cookie] = [c for c in await page.context.cookies() if c["name"] == IDENTITY_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert await page.evaluate("document.cookie") == ""  # out of reach of scripts
    await page.fill("input[name=steps]", "2")
    await page.fill("input[name=durationSeconds]", "0.4")
    await page.click("#start")
    await page.locator("#outcome").wait_for(state="visible", timeout=30_000)
    assert (await page.locator("#outcome").inner_text()).startswith("Completed")
    job_url = page.url
    assert "job=" in job_url

    other = await page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        stranger = await other.new_page()
        await stranger.goto(job_url)
        await stranger.locator("#outcome").wait_for(state="visible", timeout=15_000)
        assert "not yours" in await stranger.locator("#outcome").inner_text()
    finally:
        await other.close()
