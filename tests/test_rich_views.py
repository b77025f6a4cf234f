"""The page's richer views in real headless Chromium: steps with icons, durations and their
own log lines; log lines with time, level and ANSI colours (never markup); a live SVG chart
per metric with its text alternative; artifacts (images as thumbnails); annotations above the
log; the ETA beside the bar; and the same views after a reset, a reload and a dashboard
switch. The events come from an external job's reporter (exactly these events) or a built-in
job. A screenshot of each view is kept in ``artifacts/screenshots/``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Locator, Page, expect

from jobprogress_testing import TEST_ENV, Stack, eventually, free_port

pytestmark = pytest.mark.stack

SCREENSHOTS = Path(__file__).parents[1] / "artifacts" / "screenshots"
DESKTOP = {"width": 1100, "height": 900}
PHONE = {"width": 375, "height": 740}
SUBMIT = """async (name) => {
  const response = await fetch("/api/jobs", {method: "POST", body: JSON.stringify(
    {runner: "external", type: "ci", name, steps: 3}),
    headers: {"Content-Type": "application/json", Accept: "application/json"}});
  return await response.json();
}"""


@pytest.fixture
async def reporter() -> AsyncIterator[aiohttp.ClientSession]:
    """A client with no identity: it reports with a job's reporter token only."""
    async with aiohttp.ClientSession() as session:
        yield session


class Job:
    """An external job of the page's own identity, reported event by event."""

    def __init__(
        self, http: aiohttp.ClientSession, queue_url: str, answer: dict[str, Any], image: str
    ) -> None:
        self.http, self.queue_url, self.answer = http, queue_url, answer
        self.id: str = answer["jobId"]
        self.image = image  # the URL of an image the page may show (its own origin's)

    async def report(self, *events: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {self.answer['reporterToken']}"}
        url = f"{self.queue_url}/api/jobs/{self.id}/events"
        async with self.http.post(url, json={"events": list(events)}, headers=headers) as response:
            assert response.status == 200, await response.text()


@pytest.fixture
async def job(page: Page, progress_url: str, queue_url: str, reporter: aiohttp.ClientSession) -> Job:
    """A new external job submitted by the page (so the page's identity owns it), on screen."""
    return await open_job(page, progress_url, queue_url, reporter)


async def open_job(page: Page, progress_url: str, queue_url: str, reporter: aiohttp.ClientSession) -> Job:
    await page.set_viewport_size(DESKTOP)
    await page.goto(f"{progress_url}/client/index.html")
    answer = await page.evaluate(SUBMIT, "rich views")
    assert "reporterToken" in answer, answer
    job = Job(reporter, queue_url, answer, f"{progress_url}/client/favicon.svg")
    await page.goto(f"{progress_url}/client/index.html?job={job.id}")
    await expect(page.locator("#connection")).to_have_text("live")
    return job


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def step(
    step_id: str, name: str, status: str, started: datetime, ended: datetime | None = None
) -> dict[str, Any]:
    event = {"type": "step", "stepId": step_id, "name": name, "status": status, "startedAt": iso(started)}
    return event | ({"endedAt": iso(ended)} if ended else {})


def log(line: str, level: str = "info") -> dict[str, Any]:
    return {"type": "log", "line": line, "level": level}


def metric(x: int | None = None, **values: float) -> dict[str, Any]:
    event = {"type": "metric", "metrics": [{"key": key, "value": value} for key, value in values.items()]}
    return event | ({"step": x} if x is not None else {})


def artifact(name: str, kind: str, url: str, **more: Any) -> dict[str, Any]:
    return {"type": "artifact", "name": name, "kind": kind, "url": url, **more}


def annotation(level: str, message: str, **more: Any) -> dict[str, Any]:
    return {"type": "annotation", "level": level, "message": message, **more}


async def shown(image: Locator) -> None:
    """Wait until ``image`` has loaded, polling from here: ``wait_for_function`` polls by
    evaluating a string, which the page's Content-Security-Policy refuses."""
    loaded = "(image) => image.complete && image.naturalWidth > 0"
    await eventually(lambda: image.evaluate(loaded), "the image loaded")


async def screenshot(target: Page | Locator, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await target.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def test_steps_show_icons_durations_and_their_own_log_lines(page: Page, job: Job) -> None:
    now = datetime.now(UTC)
    await job.report(
        log("preparing the runner"),
        step("build", "Build", "running", now - timedelta(seconds=65)),
        log("compiling 12 modules"),
        log("compiled"),
        step("build", "Build", "completed", now - timedelta(seconds=65), now),
        step("lint", "Lint", "skipped", now, now),
        step("test", "Test", "running", now - timedelta(minutes=2)),
        log("running 40 tests"),
    )
    steps = page.locator("#steps li")
    await expect(steps).to_have_count(3)
    assert await steps.evaluate_all("(items) => items.map((item) => item.dataset.status)") == [
        "completed",
        "skipped",
        "running",
    ]
    await expect(steps.nth(0)).to_have_text("✓completed: Build1:05")
    await expect(steps.nth(1).locator(".step-icon")).to_have_text("↷")
    assert await steps.nth(1).locator(".step-icon").get_attribute("aria-hidden") == "true"
    # The running step's time goes on: 2 minutes and more, updated as the page stays open.
    running = steps.nth(2).locator(".step-duration")
    await expect(running).to_have_text(re.compile(r"^2:\d\d$"))
    first = await running.inner_text()
    await expect(running).not_to_have_text(first)

    groups = page.locator("#log .log-group")
    await expect(groups).to_have_count(3)  # outside steps, Build, Test (Lint logged nothing)
    texts = [await group.locator("li").all_inner_texts() for group in await groups.all()]
    assert texts == [["preparing the runner"], ["compiling 12 modules", "compiled"], ["running 40 tests"]]
    await expect(groups.nth(0).locator("summary")).to_have_text("Outside steps")
    await expect(groups.nth(1).locator("summary")).to_contain_text("Build1:05")
    await screenshot(page.locator("#job"), "steps")

    await job.report(step("test", "Test", "failed", now - timedelta(minutes=2), now), {"type": "failed"})
    await expect(steps.nth(2)).to_have_attribute("data-status", "failed")
    await expect(steps.nth(2).locator(".step-icon")).to_have_text("✕")
    await expect(steps.nth(2).locator(".step-duration")).to_have_text("2:00")


ANSI_LINE = "\x1b[31mred\x1b[0m plain \x1b[1;92mbold green\x1b[0m \x1b[34mblue\x1b[2K"
MARKUP_LINE = '<script>window.injected = 1</script><img src=x onerror="window.injected = 2"><b>not bold</b>'


async def test_log_lines_show_time_level_and_ansi_colours_but_never_markup(page: Page, job: Job) -> None:
    await job.report(
        log("details", "debug"),
        log("all fine"),
        log("disk almost full", "warning"),
        log("cannot connect to the database", "error"),
        log(ANSI_LINE),
        log(MARKUP_LINE),
    )
    lines = page.locator("#log li")
    await expect(lines).to_have_count(6)
    levels = await lines.evaluate_all(
        "(items) => items.map((item) => [item.dataset.level, item.dataset.tag])"
    )
    assert (
        levels
        == [["debug", "debug"], ["info", "info"], ["warning", "warn"], ["error", "error"]]
        + [["info", "info"]] * 2
    )
    # The time and level are drawn before each line, from its event's time.
    times = await lines.evaluate_all("(items) => items.map((item) => item.dataset.time)")
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", time) for time in times), times
    before = await lines.nth(3).evaluate("(item) => getComputedStyle(item, '::before').content")
    assert "attr(data-tag)" in before or "error" in before.lower()
    # Errors stand out: their own colour and background.
    colours = await lines.evaluate_all(
        "(items) => items.map((item) => getComputedStyle(item))"
        ".map((style) => [style.color, style.backgroundColor])"
    )
    assert len({tuple(colour) for colour in colours[:4]}) == 4 and colours[3][1] != colours[1][1]

    ansi = lines.nth(4)
    await expect(ansi).to_have_text("red plain bold green blue")  # no escape code left
    spans = await ansi.locator("span").evaluate_all(
        "(spans) => spans.map((s) => [s.textContent, s.className, getComputedStyle(s).color,"
        " getComputedStyle(s).fontWeight])"
    )
    assert [(text, classes) for text, classes, _, _ in spans] == [
        ("red", "ansi-fg-31"),
        ("bold green", "ansi-fg-92 ansi-bold"),
        ("blue", "ansi-fg-34"),
    ]
    assert spans[0][2] == "rgb(255, 107, 107)" and spans[1][3] == "700"
    assert len({colour for _, _, colour, _ in spans}) == 3

    markup = lines.nth(5)
    await expect(markup).to_have_text(MARKUP_LINE)  # shown as text, exactly
    assert await markup.evaluate("(item) => item.children.length") == 0
    assert await page.evaluate("window.injected") is None
    await screenshot(page.locator("#log"), "log-levels-ansi")


def number(label: str) -> float:
    """A tick's value from its label (compact: 2.5K)."""
    return float(label[:-1]) * 1000 if label.endswith("K") else float(label)


async def chart_state(chart: Locator) -> dict[str, Any]:
    state: dict[str, Any] = await chart.evaluate(
        """(figure) => ({
          label: figure.querySelector("svg").getAttribute("aria-label"),
          title: figure.querySelector("svg > title").textContent,
          caption: figure.querySelector("figcaption").textContent,
          ticks: [...figure.querySelectorAll(".chart-tick")].map((t) => t.textContent),
          path: figure.querySelector(".chart-line")?.getAttribute("d") ?? "",
        })"""
    )
    return state


async def test_a_chart_per_metric_grows_steadily_with_a_text_alternative(page: Page, job: Job) -> None:
    await job.report(metric(loss=0.9, rows=2400))
    charts = page.locator("#charts figure")
    await expect(charts).to_have_count(2)
    loss, rows = page.locator('figure[data-key="loss"]'), page.locator('figure[data-key="rows"]')
    await expect(rows.locator("svg")).to_have_attribute("role", "img")
    await expect(rows.locator("svg")).to_have_attribute(
        "aria-label", "rows: latest 2,400 at step 1; 1 value from 2,400 to 2,400"
    )
    first = await chart_state(rows)
    assert first["title"] == first["label"] and first["caption"] == "rows 2,400"
    for x, value in enumerate([2900, 1900, 2650], start=2):  # inside the first bounds
        await job.report(metric(x, rows=value))
        await expect(rows.locator("svg")).to_have_attribute("aria-label", re.compile(f"at step {x};"))
        state = await chart_state(rows)
        assert state["ticks"][:-2] == first["ticks"][:-2]  # the y axis did not move
        assert state["path"].count("L") == x - 1
    assert (await chart_state(rows))["label"] == "rows: latest 2,650 at step 4; 4 values from 1,900 to 2,900"
    await job.report(metric(5, rows=9000))
    await expect(rows.locator("svg")).to_have_attribute("aria-label", re.compile("latest 9,000 at step 5"))
    grown = await chart_state(rows)
    low, high = number(grown["ticks"][0]), number(grown["ticks"][-3])  # the y axis grew, only
    assert low <= number(first["ticks"][0]) and high >= 9000 > number(first["ticks"][-3])
    await job.report(metric(6, rows=3000))
    await expect(rows.locator("svg")).to_have_attribute("aria-label", re.compile("latest 3,000"))
    assert (await chart_state(rows))["ticks"][:-2] == grown["ticks"][:-2]  # axes only grow
    assert (await chart_state(loss))["caption"] == "loss 0.9"
    await screenshot(page.locator("#charts-view"), "charts")


async def test_artifacts_are_listed_and_images_shown_as_thumbnails(page: Page, job: Job) -> None:
    image_url = job.image
    await job.report(
        artifact("coverage.svg", "image", image_url, mime="image/svg+xml"),
        artifact("report.pdf", "file", "https://reports.example/r.pdf", mime="application/pdf", size=48213),
        artifact("<b>dashboard</b>", "link", "https://dash.example/?a=1&b=2"),
    )
    # Another site's image: the page's CSP (img-src 'self' data:) refuses it; the link stays.
    await job.report(artifact("remote.png", "image", "https://images.example/remote.png"))
    items = page.locator("#artifacts li")
    await expect(items).to_have_count(4)
    links = await page.locator("#artifacts a").evaluate_all(
        "(links) => links.map((a) => [a.textContent, a.href, a.rel, a.target])"
    )
    assert links == [
        ["coverage.svg", image_url, "noopener noreferrer", "_blank"],
        ["report.pdf", "https://reports.example/r.pdf", "noopener noreferrer", "_blank"],
        ["<b>dashboard</b>", "https://dash.example/?a=1&b=2", "noopener noreferrer", "_blank"],
        ["remote.png", "https://images.example/remote.png", "noopener noreferrer", "_blank"],
    ]
    thumbnail = items.nth(0).locator("img.thumbnail")
    await expect(thumbnail).to_have_attribute("src", image_url)
    await expect(thumbnail).to_be_visible()
    await shown(page.locator("#artifacts img").first)
    await expect(items.nth(3)).to_have_class(re.compile("thumbnail-missing"))
    await expect(items.nth(3).locator("img")).to_be_hidden()
    assert await page.locator("#artifacts img").count() == 2  # images only
    await expect(items.nth(1).locator(".artifact-meta")).to_have_text("file · application/pdf · 48.2 KB")
    assert await items.nth(2).locator("b").count() == 0
    await screenshot(page.locator("#artifacts-view"), "artifacts")


#: An image host the page is told about (JOBPROGRESS_IMAGE_ORIGINS), and one it is not.
IMAGES_PORT, ELSEWHERE_PORT = free_port(), free_port()
IMAGES, ELSEWHERE = f"http://127.0.0.1:{IMAGES_PORT}", f"http://127.0.0.1:{ELSEWHERE_PORT}"


@pytest.fixture(scope="module")
def images_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("images"), env={**TEST_ENV, "JOBPROGRESS_IMAGE_ORIGINS": IMAGES})
    with stack.running():
        for service in ("job-queue-service", "progress-service"):
            stack.start_service(service)
        yield stack


@pytest.fixture
async def image_hosts() -> AsyncIterator[list[str]]:
    """The same image on both hosts; each request's host is noted."""
    served: list[str] = []
    picture = (Path(__file__).parents[1] / "web" / "favicon.svg").read_bytes()

    async def image(request: web.Request) -> web.Response:
        served.append(request.host)
        return web.Response(body=picture, content_type="image/svg+xml")

    app = web.Application()
    app.router.add_get("/chart.svg", image)
    runner = web.AppRunner(app)
    await runner.setup()
    for port in (IMAGES_PORT, ELSEWHERE_PORT):
        await web.TCPSite(runner, "127.0.0.1", port).start()
    yield served
    await runner.cleanup()


async def test_images_from_the_configured_origins_are_shown_and_from_others_listed(
    page: Page, images_stack: Stack, image_hosts: list[str], reporter: aiohttp.ClientSession
) -> None:
    progress_url = images_stack.url("progress-service")
    async with reporter.get(f"{progress_url}/client/index.html") as response:
        policy = response.headers["Content-Security-Policy"]
    assert f"img-src 'self' data: {IMAGES};" in policy
    job = await open_job(page, progress_url, images_stack.url("job-queue-service"), reporter)
    await job.report(
        artifact("bucket.svg", "image", f"{IMAGES}/chart.svg"),
        artifact("elsewhere.svg", "image", f"{ELSEWHERE}/chart.svg"),
    )
    items = page.locator("#artifacts li")
    await expect(items).to_have_count(2)
    await shown(page.locator("#artifacts img").first)
    await expect(items.nth(0).locator("img.thumbnail")).to_be_visible()
    await expect(items.nth(1)).to_have_class(re.compile("thumbnail-missing"))
    await expect(items.nth(1).locator("a")).to_have_attribute("href", f"{ELSEWHERE}/chart.svg")
    # The browser never asked the other host: the policy stopped it, not a failed load.
    assert image_hosts == [f"127.0.0.1:{IMAGES_PORT}"]


async def test_annotations_stand_above_the_log_in_their_level_style(page: Page, job: Job) -> None:
    await job.report(
        log("a line"),
        annotation("notice", "Cache restored"),
        annotation("warning", "3 tests skipped", title="Test"),
        annotation("error", "<i>Disk</i> full", title="Upload"),
    )
    notes = page.locator("#annotations li")
    await expect(notes).to_have_count(3)
    assert await notes.all_inner_texts() == ["Notice\nCache restored", "Warning: Test\n3 tests skipped",
                                             "Error: Upload\n<i>Disk</i> full"]  # fmt: skip
    backgrounds = await notes.evaluate_all(
        "(items) => items.map((item) => getComputedStyle(item).backgroundColor)"
    )
    assert len(set(backgrounds)) == 3
    notes_box, log_box = (
        await page.locator("#annotations").bounding_box(),
        await page.locator("#log").bounding_box(),
    )
    assert notes_box and log_box and notes_box["y"] + notes_box["height"] <= log_box["y"]
    await screenshot(page.locator("#job"), "annotations")


async def test_the_eta_stands_beside_the_bar_while_it_is_known(page: Page, job: Job) -> None:
    eta = page.locator("#eta")
    await job.report({"type": "progress", "step": 1, "totalSteps": 3, "etaSeconds": 125})
    await expect(eta).to_have_text("about 2 min left")
    await expect(eta).to_be_visible()
    bar, label = await page.locator("#progress").bounding_box(), await eta.bounding_box()
    assert bar and label and abs((bar["y"] + bar["height"] / 2) - (label["y"] + label["height"] / 2)) < 12
    await screenshot(page.locator(".bar-row"), "eta")
    await job.report({"type": "progress", "step": 2, "totalSteps": 3, "etaSeconds": 20})
    await expect(eta).to_have_text("less than a minute left")
    await job.report({"type": "progress", "step": 2, "totalSteps": 3, "message": "estimate lost"})
    await expect(page.locator("#message")).to_have_text("estimate lost")
    await expect(eta).to_be_hidden()


VIEWS = """() => ({
  steps: [...document.querySelectorAll("#steps li")].map((li) => [li.dataset.status, li.textContent]),
  groups: [...document.querySelectorAll("#log .log-group")].map((group) =>
    [group.querySelector("summary").textContent, group.querySelectorAll("li").length]),
  charts: [...document.querySelectorAll("#charts svg")].map((svg) => svg.getAttribute("aria-label")),
  artifacts: [...document.querySelectorAll("#artifacts li")].map((li) => li.textContent),
  annotations: [...document.querySelectorAll("#annotations li")].map((li) => li.textContent),
})"""


async def views_of(page: Page) -> dict[str, Any]:
    views: dict[str, Any] = await page.evaluate(VIEWS)
    return views


async def start_builtin(page: Page, job_type: str, *, steps: int, duration: float) -> str:
    await page.select_option("select[name=type]", job_type)
    await page.fill("input[name=steps]", str(steps))
    await page.fill("input[name=durationSeconds]", str(duration))
    before = page.url
    await page.click("#start")
    await page.wait_for_url(lambda url: url != before and "?job=" in url)  # this job's, not the last
    job_id = page.url.rsplit("?job=", 1)[1]
    await expect(page.locator("#job-id")).to_have_text(job_id)
    return job_id


async def test_a_reload_and_a_dashboard_switch_show_the_same_views(page: Page, progress_url: str) -> None:
    await page.set_viewport_size(DESKTOP)
    await page.goto(f"{progress_url}/client/index.html")
    imported = await start_builtin(page, "import", steps=3, duration=1.5)
    await expect(page.locator("#outcome")).to_have_text(re.compile("^Completed"), timeout=30_000)
    seen = await views_of(page)
    assert [status for status, _ in seen["steps"]] == ["completed"] * 3
    # Each step's lines under a heading that tells what the step list does.
    assert [heading for heading, _ in seen["groups"]] == [text for _, text in seen["steps"]]
    assert [count for _, count in seen["groups"]] == [2, 2, 2]
    [chart] = seen["charts"]
    assert chart.startswith("rowsPerSecond: latest ") and "at step 6; 6 values from " in chart
    await page.reload()
    await expect(page.locator("#outcome")).to_have_text(re.compile("^Completed"))
    await expect(page.locator("#charts svg")).to_have_attribute("aria-label", chart)
    assert await views_of(page) == seen

    built = await start_builtin(page, "build", steps=4, duration=1)  # its Test step: a metric, a warning
    await expect(page.locator("#outcome")).to_have_text(re.compile("^Completed"), timeout=30_000)
    await expect(page.locator("#annotations li")).to_have_text(
        "Warning: Test3 tests were skipped: no GPU on this runner"
    )
    await expect(page.locator("#charts svg")).to_have_attribute(
        "aria-label", "testsPassed: latest 312 at step 8; 2 values from 156 to 312"
    )
    await page.locator(f'#recent-list li[data-job-id="{imported}"] a').click()
    await expect(page.locator("#job-id")).to_have_text(imported)
    await expect(page.locator("#charts svg")).to_have_attribute("aria-label", chart)
    assert await views_of(page) == seen
    await page.locator(f'#recent-list li[data-job-id="{built}"] a').click()  # and back
    await expect(page.locator("#job-id")).to_have_text(built)
    await expect(page.locator("#annotations li")).to_have_count(1)
    await screenshot(page.locator("#job"), "reload-and-switch")


async def test_a_reset_rebuilds_the_views_from_the_snapshot(page: Page, job: Job) -> None:
    now = datetime.now(UTC)
    await job.report(
        step("build", "Build", "running", now - timedelta(seconds=30)),
        metric(1, loss=0.9),
        metric(2, loss=0.5),
        step("build", "Build", "completed", now - timedelta(seconds=30), now),
        artifact("build.tar.gz", "file", "https://ci.example/b.tgz"),
        annotation("warning", "slow disk"),
        step("test", "Test", "running", now - timedelta(seconds=5)),
    )
    for batch in range(3):  # more than the 1,000 events a tab hands on: older ones fold into a reset
        await job.report(*(log(f"line {batch * 400 + n}") for n in range(400)))
    await expect(page.locator("#log li").last).to_have_text("line 1199", timeout=20_000)
    first = await views_of(page)
    assert first["charts"] == ["loss: latest 0.5 at step 2; 2 values from 0.5 to 0.9"]

    second = await page.context.new_page()  # gets what the first tab saw: a reset, then the rest
    await second.goto(page.url)
    await expect(second.locator("#log li").last).to_have_text("line 1199", timeout=20_000)
    rebuilt = await views_of(second)
    assert rebuilt["steps"][0] == first["steps"][0] and rebuilt["steps"][1][0] == "running"
    assert rebuilt["charts"] == ["loss: latest 0.5 at step 2; 1 value from 0.5 to 0.5"]  # the latest
    assert rebuilt["artifacts"] == ["1 earlier artifact, from before the log was trimmed"]
    assert rebuilt["annotations"] == ["1 earlier annotation, from before the log was trimmed"]
    assert rebuilt["groups"][-1][0].startswith("◔running: Test")
    await screenshot(second.locator("#job"), "reset")
    await job.report(step("test", "Test", "completed", now - timedelta(seconds=5), now), {"type": "complete"})
    for tab in (page, second):
        await expect(tab.locator("#steps li").nth(1)).to_have_text("✓completed: Test0:05")


async def test_the_views_fit_a_phone(page: Page, job: Job) -> None:
    now = datetime.now(UTC)
    await job.report(
        step("checkout", "Checkout", "running", now - timedelta(seconds=12)),
        log("Cloning https://git.example/" + "very-long-repository-name-" * 6 + ".git"),
        step("checkout", "Checkout", "completed", now - timedelta(seconds=12), now - timedelta(seconds=4)),
        step("test", "Test the whole application, a long name", "running", now - timedelta(seconds=4)),
        log("\x1b[32m✓\x1b[0m 311 passed"),
        log("\x1b[1;31m✕ test_upload\x1b[0m", "error"),
        log("flaky network", "warning"),
        *(metric(n, testsPassed=40 * n, coverage=70 + n) for n in range(1, 7)),
        artifact("screenshot-of-the-failing-test-" * 3 + ".svg", "image", job.image),
        artifact("junit.xml", "file", "https://ci.example/junit.xml", size=9120),
        annotation("warning", "1 test failed, retried once", title="Test"),
        annotation("error", "test_upload failed"),
        {"type": "progress", "step": 1, "totalSteps": 2, "etaSeconds": 130, "message": "Testing"},
    )
    await expect(page.locator("#eta")).to_have_text("about 2 min left")
    await expect(page.locator("#charts figure")).to_have_count(2)
    await shown(page.locator("#artifacts img").first)
    await screenshot(page.locator("#job"), "job-desktop")
    # The dashboard's row keeps the job's own name and status, not a step's or an artifact's.
    row = page.locator(f'#recent-list li[data-job-id="{job.id}"]')
    await expect(row.locator("a")).to_have_text(f"rich views {job.id[:8]}")
    await expect(row.locator(".row-status")).to_have_text("PROCESSING")
    await page.set_viewport_size(PHONE)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for view in ("#steps", "#charts", "#artifacts", "#annotations", "#log"):
        box = await page.locator(view).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], view
    await page.locator("#log .log-heading").first.focus()  # a group folds by keyboard
    await page.keyboard.press("Enter")
    await expect(page.locator("#log .log-group").first).not_to_have_attribute("open", "")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "phone-views.png"), full_page=True)
