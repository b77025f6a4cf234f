"""The page's live dashboard in real headless Chromium: the tabs of one browser share ONE
stream of the user's jobs (``GET /api/progress/mine``), so eight tabs are all live within
the browser's six connections per origin; a reload of the tab holding the stream and a
restart of progress-service mid-way leave every tab as a fresh replay would; a job
submitted in one tab appears in the others without a reload."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Page, expect

from jobprogress_testing import ServiceProcess, Stack, eventually

pytestmark = pytest.mark.stack

FINAL = re.compile("^(COMPLETED|FAILED|CANCELLED)$")
#: A row of the dashboard as the page shows it: job id, status, percent, step.
ROWS = """() => [...document.querySelectorAll("#recent-list li")].map((row) => [
  row.dataset.jobId, row.querySelector(".row-status").textContent,
  row.querySelector("progress").value, row.querySelector(".row-step").textContent])"""


@pytest.fixture
async def progress(jobprogress_stack: Stack) -> AsyncIterator[ServiceProcess]:
    """A progress-service of the test's own: its streams are the browser's alone."""
    service = jobprogress_stack.start_service("progress-service")
    yield service
    service.stop()


async def open_tabs(page: Page, url: str, count: int) -> list[Page]:
    """``count`` tabs of the page in one browser context: one identity, one connection pool.
    The first is loaded alone, so that the others come with the cookie it was given."""
    await page.goto(f"{url}/client/index.html")
    tabs = [page]
    for _ in range(count - 1):
        tab = await page.context.new_page()
        await tab.goto(f"{url}/client/index.html")
        tabs.append(tab)
    return tabs


async def start_job(tab: Page, *, steps: int, duration: float) -> str:
    await tab.fill("input[name=steps]", str(steps))
    await tab.fill("input[name=durationSeconds]", str(duration))
    await tab.click("#start")
    await tab.wait_for_url("**/client/index.html?job=*")
    await expect(tab.locator("#job-id")).not_to_be_empty()
    return (await tab.locator("#job-id").inner_text()).strip()


async def dashboard_of(tab: Page) -> dict[str, tuple[str, int, str]]:
    return {job_id: (status, round(value), step) for job_id, status, value, step in await tab.evaluate(ROWS)}


async def wait_until_ended(tab: Page, job_ids: list[str]) -> None:
    for job_id in job_ids:
        row = tab.locator(f'#recent-list li[data-job-id="{job_id}"]')
        await expect(row).to_have_attribute("data-status", FINAL, timeout=60_000)


async def roles_of(tabs: list[Page]) -> list[str]:
    """Each tab's part in the shared stream: ``holder`` (it reads it) or ``follower``."""
    return [await tab.locator("#mine-connection").get_attribute("data-role") or "" for tab in tabs]


async def one_holder(tabs: list[Page]) -> bool:
    return sorted(await roles_of(tabs)) == ["follower"] * (len(tabs) - 1) + ["holder"]


async def state_of(tab: Page, url: str, job_id: str) -> tuple[str, int, str]:
    """A job as the API has it, in the dashboard's terms."""
    job = await (await tab.request.get(f"{url}/api/jobs/{job_id}")).json()
    step = f"step {job['step']}/{job['totalSteps']}" if job["totalSteps"] else ""
    return job["status"], job["progress"], step


async def replayed_log(tab: Page, url: str, job_id: str) -> list[str]:
    """The job's log read afresh through its own stream (which ends with the job's end)."""
    body = await (await tab.request.get(f"{url}/api/progress/{job_id}")).text()
    lines = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
        if fields.get("event") == "log":
            lines.append(json.loads(fields["data"])["line"])
    return lines


async def streams_open(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    [value] = re.findall(r"^jobprogress_sse_streams_active (\S+)$", text, re.MULTILINE)
    return float(value)


async def test_eight_tabs_of_one_browser_are_all_live_on_one_stream(
    page: Page, progress: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    tabs = await open_tabs(page, progress.url, 8)
    job_ids = [await start_job(tab, steps=3, duration=3) for tab in tabs]
    for tab in tabs:
        await wait_until_ended(tab, job_ids)
        await expect(tab.locator("#outcome")).to_have_text(re.compile("^Completed"), timeout=30_000)
    expected = {job_id: await state_of(page, progress.url, job_id) for job_id in job_ids}
    assert {state[0] for state in expected.values()} == {"COMPLETED"}
    for tab, job_id in zip(tabs, job_ids, strict=True):
        assert await dashboard_of(tab) == expected
        assert await tab.locator("#log li").all_inner_texts() == await replayed_log(tab, progress.url, job_id)
    assert await one_holder(tabs)
    # The one stream is the holder's: no tab opened one of its own, for its job or its list.
    assert await streams_open(http, progress.url) == 1


async def test_a_reload_and_a_restart_mid_way_leave_every_tab_as_a_fresh_replay(
    page: Page, jobprogress_stack: Stack, progress: ServiceProcess
) -> None:
    url, port = progress.url, progress.port
    tabs = await open_tabs(page, url, 3)
    job_ids = [await start_job(tab, steps=6, duration=10) for tab in tabs]
    for tab in tabs:
        await tab.locator("#log li").first.wait_for()
    [holder] = [tab for tab, role in zip(tabs, await roles_of(tabs), strict=True) if role == "holder"]
    await holder.reload()  # the holder goes: another tab takes the stream over
    await expect(holder.locator("#mine-connection")).to_have_attribute("data-role", "follower")
    await eventually(lambda: one_holder(tabs), "one tab holding the stream after the reload")
    assert not FINAL.match((await state_of(page, url, job_ids[-1]))[0])  # the restart comes mid-way
    progress.stop()
    await expect(holder.locator("#mine-connection")).to_have_text("reconnecting", timeout=15_000)
    replacement = jobprogress_stack.start_service("progress-service", port=port)
    try:
        for tab in tabs:
            await wait_until_ended(tab, job_ids)
            await expect(tab.locator("#outcome")).to_be_visible(timeout=30_000)
        fresh = await page.context.new_page()
        await fresh.goto(f"{url}/client/index.html")
        await wait_until_ended(fresh, job_ids)
        expected = {job_id: await state_of(page, url, job_id) for job_id in job_ids}
        assert {state[0] for state in expected.values()} == {"COMPLETED"}
        for tab, job_id in zip(tabs, job_ids, strict=True):
            assert await dashboard_of(tab) == expected == await dashboard_of(fresh)
            log = await tab.locator("#log li").all_inner_texts()
            assert log == await replayed_log(tab, url, job_id)  # nothing missing, nothing twice
            assert len(log) >= 6
    finally:
        replacement.stop()


async def test_a_job_submitted_in_another_tab_appears_without_a_reload(
    page: Page, progress: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    progress_url = progress.url
    watcher, submitter = await open_tabs(page, progress_url, 2)
    await expect(watcher.locator("#mine-connection")).to_have_text("live")
    await watcher.evaluate("window.notReloaded = true")
    job_id = await start_job(submitter, steps=2, duration=1)
    row = watcher.locator(f'#recent-list li[data-job-id="{job_id}"]')
    await expect(row).to_have_attribute("data-status", "COMPLETED", timeout=30_000)
    assert await watcher.evaluate("window.notReloaded") is True
    assert await watcher.locator("#job").is_hidden()  # only the dashboard changed
    assert (await dashboard_of(watcher))[job_id] == await state_of(watcher, progress_url, job_id)
    # Opened from the dashboard: the job's whole log, from the stream the tab already has.
    await row.locator("a").click()
    await expect(watcher.locator("#outcome")).to_have_text(re.compile("^Completed"))
    log = await watcher.locator("#log li").all_inner_texts()
    assert log == await replayed_log(watcher, progress_url, job_id)
    assert await watcher.evaluate("window.notReloaded") is True
    assert await streams_open(http, progress_url) == 1  # the two tabs' one stream
