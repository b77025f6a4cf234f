"""The page in real headless Chromium, as people use it: a job on screen to its end, a
reload and a second tab mid-job, the progress service restarted under it, a failure, a
cancel, recent jobs and a share link. Screenshots at desktop and phone widths are kept in
``artifacts/screenshots/``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, expect

from jobprogress_testing import Stack

pytestmark = pytest.mark.stack

SCREENSHOTS = Path(__file__).parents[1] / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


async def start_job(page: Page, *, steps: int, duration: float, fail_at: int | None = None) -> str:
    await page.fill("input[name=steps]", str(steps))
    await page.fill("input[name=durationSeconds]", str(duration))
    if fail_at is not None:
        await page.fill("input[name=failAtStep]", str(fail_at))
    await page.click("#start")
    await page.wait_for_url("**/client/index.html?job=*")
    await page.locator("#job-id").wait_for()
    return (await page.locator("#job-id").inner_text()).strip()


async def log_of(page: Page) -> list[str]:
    return await page.locator("#log li").all_inner_texts()


async def wait_for_outcome(page: Page, timeout: float = 60_000) -> str:
    await page.locator("#outcome").wait_for(state="visible", timeout=timeout)
    return await page.locator("#outcome").inner_text()


async def elapsed_of(page: Page, progress_url: str) -> str:
    """The job's run time as the page should show it, from the job's own timestamps (the
    page's come from its events: they may round the other way by a second)."""
    job_id = parse_qs(urlsplit(page.url).query)["job"][0]
    job = await (await page.request.get(f"{progress_url}/api/jobs/{job_id}")).json()
    started, finished = (
        datetime.fromisoformat(job[name].replace("Z", "+00:00")) for name in ("startedAt", "finishedAt")
    )
    seconds = round((finished - started).total_seconds())
    shown = await page.locator("#elapsed").inner_text()
    near = {f"{s // 60}:{s % 60:02d}" for s in (seconds - 1, seconds, seconds + 1) if s >= 0}
    return shown if shown in near else f"one of {sorted(near)}"


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_a_job_runs_to_completion_on_screen(page: Page, progress_url: str) -> None:
    await page.set_viewport_size(DESKTOP)
    await page.goto(f"{progress_url}/client/index.html")
    await start_job(page, steps=3, duration=1.5)
    bar = page.locator("[role=progressbar]")
    assert (await wait_for_outcome(page)).startswith("Completed")
    assert await bar.get_attribute("aria-valuenow") == "100"
    assert await page.locator("#status").inner_text() == "COMPLETED"
    assert await page.locator("#connection").inner_text() == "closed"
    assert await page.locator("#elapsed").inner_text() == await elapsed_of(page, progress_url)
    assert len(await log_of(page)) >= 3
    # Listed at the start, QUEUED; listed again, COMPLETED, by a call made at the job's end.
    await expect(page.locator("#recent-list li").first).to_contain_text("COMPLETED", timeout=15_000)
    await screenshot(page, "desktop-completed")

    # Keyboard only: tab to the form's button and start another job.
    await page.focus("input[name=durationSeconds]")
    await page.keyboard.press("Tab")  # fail at step
    await page.keyboard.press("Tab")  # the button
    assert await page.evaluate("document.activeElement.id") == "start"


async def test_a_reload_and_a_second_tab_mid_job_show_the_same_log_once(
    page: Page, progress_url: str
) -> None:
    await page.goto(f"{progress_url}/client/index.html")
    await start_job(page, steps=4, duration=4)
    await page.locator("#log li").nth(1).wait_for()
    second = await page.context.new_page()
    await second.goto(page.url)
    await page.reload()  # mid-job
    await wait_for_outcome(page)
    await wait_for_outcome(second)
    first_log, second_log = await log_of(page), await log_of(second)
    fresh = await page.context.new_page()  # the whole log, read afresh after the fact
    await fresh.goto(page.url)
    await wait_for_outcome(fresh)
    assert first_log == second_log == await log_of(fresh)  # nothing missing, nothing twice
    assert len(first_log) == len(set(first_log)) and len(first_log) >= 4


async def test_the_page_rides_out_a_restart_of_the_progress_service(
    page: Page, jobprogress_stack: Stack
) -> None:
    progress = jobprogress_stack.start_service("progress-service")
    port, url = progress.port, progress.url
    await page.goto(f"{url}/client/index.html")
    job_id = await start_job(page, steps=5, duration=7)
    connection = page.locator("#connection")
    await page.locator("#log li").first.wait_for()
    assert await connection.inner_text() == "live"
    progress.stop()
    await expect(connection).to_have_text("reconnecting", timeout=15_000)
    replacement = jobprogress_stack.start_service("progress-service", port=port)
    try:
        await expect(connection).to_have_text("live", timeout=30_000)
        await wait_for_outcome(page)
        seen = await log_of(page)
        fresh = await page.context.new_page()  # the whole log, read afresh after the fact
        await fresh.goto(f"{url}/client/index.html?job={job_id}")
        await wait_for_outcome(fresh)
        assert seen == await log_of(fresh)  # nothing lost, nothing twice
    finally:
        replacement.stop()


async def test_a_failed_job_shows_its_error(page: Page, progress_url: str) -> None:
    await page.goto(f"{progress_url}/client/index.html")
    await start_job(page, steps=3, duration=0.6, fail_at=2)
    outcome = await wait_for_outcome(page)
    assert outcome.startswith("Failed: ") and "Step 2" in outcome
    assert await page.locator("#status").inner_text() == "FAILED"
    assert "failed" in (await page.locator("#progress").get_attribute("class") or "")


async def test_cancel_and_share_from_the_page(page: Page, progress_url: str, context: BrowserContext) -> None:
    await page.set_viewport_size(PHONE)
    await page.goto(f"{progress_url}/client/index.html")
    await start_job(page, steps=4, duration=600)
    await page.locator("#log li").first.wait_for()
    await page.click("#share")
    await page.locator("#share-box").wait_for(state="visible")
    link = await page.locator("#share-url").input_value()
    assert "share=" in link
    await screenshot(page, "phone-running")
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    viewer = await context.new_page()  # another browser: the link, read-only
    await viewer.goto(link)
    await viewer.locator("#log li").first.wait_for()
    assert await viewer.locator("#owner-actions").is_hidden()

    await page.click("#cancel")
    assert (await wait_for_outcome(page)) == "Cancelled"
    assert (await wait_for_outcome(viewer)) == "Cancelled"
    await screenshot(page, "phone-cancelled")


@pytest.fixture
async def context(page: Page) -> BrowserContext:
    """A second, separate browser context (another person)."""
    browser = page.context.browser
    assert browser is not None
    other = await browser.new_context()
    yield other  # type: ignore[misc]
    await other.close()


async def test_pages_have_no_horizontal_scroll_on_a_phone(page: Page, progress_url: str) -> None:
    await page.set_viewport_size(PHONE)
    await page.goto(f"{progress_url}/client/index.html")
    await start_job(page, steps=2, duration=0.4)
    await wait_for_outcome(page)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await screenshot(page, "phone-completed")
