"""The page's notifications in a real Chromium: ``web/notify.js`` while the tab is hidden, and
``web/sw.js`` showing a Web Push message, delivered through the DevTools protocol
(``ServiceWorker.deliverPushMessage``: a headless browser has no push service to subscribe
to, so the push service's leg is the one part played), unless a page of the site is in
front. A click on the notification is a user's: Chromium shows it on the desktop's
notification server, played on a session bus of the test's own (desktop_fakes.py), which
clicks it; the protocol has no way to."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import BrowserContext, CDPSession, Locator, Page, Worker, async_playwright

from jobprogress_testing import Stack, eventually

from .conftest import CHROMIUM
from .desktop_fakes import NotificationServer
from .push_fakes import Browser, PushService

pytestmark = pytest.mark.stack

JOB = {
    "jobId": uuid.uuid4().hex,
    "name": "Nightly build",
    "status": "FAILED",
    "error": "Step 2 failed: tests",
}


@contextlib.asynccontextmanager
async def allowed_on(origin: str) -> AsyncIterator[BrowserContext]:
    """A browser context where ``origin`` may show notifications (as if the user had said yes)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            context = await browser.new_context()
            await context.grant_permissions(["notifications"], origin=origin)
            yield context
        finally:
            await browser.close()


@pytest.fixture
async def context(progress_url: str) -> AsyncIterator[BrowserContext]:
    async with allowed_on(progress_url) as context:
        yield context


async def open_page(context: BrowserContext, progress_url: str) -> Page:
    page = await context.new_page()
    await page.goto(f"{progress_url}/client/index.html")
    assert await page.evaluate("Notification.permission") == "granted"
    return page


async def notify(page: Page, visibility: str) -> Any:
    """Call ``notifyJobEnded`` with the page's visibility as given; what it showed."""
    return await page.evaluate(
        """async ([job, visibility]) => {
            Object.defineProperty(document, "visibilityState", { configurable: true, get: () => visibility });
            const { notifyJobEnded } = await import("./notify.js");
            const shown = await notifyJobEnded(job);
            return shown && { title: shown.title, body: shown.body, tag: shown.tag, url: shown.data.url };
        }""",
        [JOB, visibility],
    )


async def test_a_hidden_tab_shows_a_job_end_and_a_visible_one_does_not(
    context: BrowserContext, progress_url: str
) -> None:
    page = await open_page(context, progress_url)
    assert await notify(page, "visible") is None
    shown = await notify(page, "hidden")
    assert shown == {
        "title": "Nightly build failed",
        "body": "Step 2 failed: tests",
        "tag": f"job-{JOB['jobId']}",
        "url": f"{progress_url}/client/index.html?job={JOB['jobId']}",
    }
    old = {**JOB, "ts": "2020-01-01T00:00:00Z"}  # a replayed end, from long ago
    assert (
        await page.evaluate("""async (job) => (await import("./notify.js")).notifyJobEnded(job)""", old)
        is None
    )


async def registration_of(cdp: CDPSession, scope: str) -> str:
    found: dict[str, str] = {}

    def updated(params: dict[str, Any]) -> None:
        for registration in params["registrations"]:
            if registration["scopeURL"] == scope and not registration.get("isDeleted"):
                found["id"] = registration["registrationId"]

    cdp.on("ServiceWorker.workerRegistrationUpdated", updated)
    await cdp.send("ServiceWorker.enable")
    return await eventually(lambda: found.get("id"), "the service worker's registration")


WINDOWS = "async () => (await self.clients.matchAll({ type: 'window', includeUncontrolled: true })).length"


@dataclass
class Pushing:
    """The page's service worker, and the protocol session that pushes to it. The browser's
    own log of background services (the DevTools "Push messaging" and "Notifications" panes)
    says when a push event was handled (its ``waitUntil`` settled) and what was displayed."""

    origin: str
    worker: Worker
    cdp: CDPSession
    registration: str
    log: list[dict[str, Any]] = field(default_factory=list)

    def logged(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.log if event["eventName"] == name]

    async def push(self, message: dict[str, Any]) -> None:
        """Deliver ``message`` and wait until the worker has handled it."""
        before = len(self.logged("Push event completed"))
        params = {"origin": self.origin, "registrationId": self.registration, "data": json.dumps(message)}
        await self.cdp.send("ServiceWorker.deliverPushMessage", params)
        [*_, completed] = await eventually(
            lambda: self.logged("Push event completed")[before:], "the push event handled"
        )
        assert completed["eventMetadata"] == [{"key": "Status", "value": "Success"}]

    async def notifications(self) -> list[dict[str, str]]:
        shown: list[dict[str, str]] = await self.worker.evaluate(
            """async () => (await self.registration.getNotifications()).map(
                (n) => ({ title: n.title, body: n.body, tag: n.tag, url: n.data.url }))"""
        )
        return shown

    async def no_page_left(self) -> None:
        """Wait until the worker sees no page of the site (one still closing could count as
        in front)."""

        async def none() -> bool:
            return await self.worker.evaluate(WINDOWS) == 0

        await eventually(none, "the worker seeing no page of the site")


async def pushing(context: BrowserContext, progress_url: str) -> tuple[Page, Pushing]:
    """A page of the site that registered sw.js, and the push to its worker. The protocol is
    driven from a blank page (not a page of the site), which sees the browser's service
    workers all the same."""
    page = await open_page(context, progress_url)
    await page.evaluate(
        """async () => {
            await navigator.serviceWorker.register("sw.js", { type: "module" });
            await navigator.serviceWorker.ready;
        }"""
    )
    workers = context.service_workers
    worker = workers[0] if workers else await context.wait_for_event("serviceworker")
    cdp = await context.new_cdp_session(await context.new_page())
    registration = await registration_of(cdp, f"{progress_url}/client/")
    to = Pushing(progress_url, worker, cdp, registration)
    cdp.on(
        "BackgroundService.backgroundServiceEventReceived",
        lambda p: to.log.append(p["backgroundServiceEvent"]),
    )
    for service in ("pushMessaging", "notifications"):
        await cdp.send("BackgroundService.startObserving", {"service": service})
        await cdp.send("BackgroundService.setRecording", {"shouldRecord": True, "service": service})
    return page, to


PUSHED = {**JOB, "url": f"/client/index.html?job={JOB['jobId']}"}
SHOWN = {
    "title": "Nightly build failed",
    "body": "Step 2 failed: tests",
    "tag": f"job-{JOB['jobId']}",
}


async def test_the_service_worker_shows_a_pushed_job_end(context: BrowserContext, progress_url: str) -> None:
    page, to = await pushing(context, progress_url)
    await page.close()  # closed, not navigated away: a page kept for back/forward counts
    await to.no_page_left()
    await to.push(PUSHED)
    assert await to.notifications() == [
        {**SHOWN, "url": f"{progress_url}/client/index.html?job={JOB['jobId']}"}
    ]


async def test_a_push_shows_nothing_while_a_page_of_the_site_is_in_front(
    context: BrowserContext, progress_url: str
) -> None:
    page, to = await pushing(context, progress_url)
    assert await to.worker.evaluate(
        """async () => (await self.clients.matchAll({ type: "window" })).map(
            (c) => [c.focused, c.visibilityState])"""
    ) == [[True, "visible"]]  # headless Chromium: each page is a window of its own, in front
    await to.push(PUSHED)  # handled: the browser logged the push event's end
    assert await to.notifications() == []
    assert to.logged("Notification displayed") == []

    # The same push with no page left shows it: the check above could fail.
    await page.close()
    await to.no_page_left()
    await to.push(PUSHED)
    assert [event["instanceId"] for event in to.logged("Notification displayed")] == [SHOWN["tag"]]
    assert len(await to.notifications()) == 1


@contextlib.asynccontextmanager
async def on_a_desktop(
    origin: str, server: NotificationServer, profile: Path
) -> AsyncIterator[BrowserContext]:
    """A browser that shows its notifications on ``server``, where ``origin`` may show them.
    Its context is the browser's own profile (a persistent context): in a context made by
    ``browser.new_context()``, a click on a notification opened no page (Chromium 156)."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
            env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": server.bus},
        )
        try:
            await context.grant_permissions(["notifications"], origin=origin)
            yield context
        finally:
            await context.close()


@pytest.fixture
async def desktop(
    notification_server: NotificationServer, progress_url: str, tmp_path: Path
) -> AsyncIterator[BrowserContext]:
    async with on_a_desktop(progress_url, notification_server, tmp_path / "profile") as context:
        yield context


def job_page(progress_url: str, job_id: str = JOB["jobId"]) -> str:
    return f"{progress_url}/client/index.html?job={job_id}"


def pages_opened(context: BrowserContext) -> list[str]:
    return [page.url for page in context.pages if page.url != "about:blank"]


async def test_a_click_on_a_pushed_notification_opens_the_jobs_page(
    desktop: BrowserContext, notification_server: NotificationServer, progress_url: str
) -> None:
    page, to = await pushing(desktop, progress_url)
    await page.close()
    await to.no_page_left()
    await to.push(PUSHED)
    [shown] = await eventually(lambda: notification_server.shown, "the notification on the desktop")
    assert shown.summary == "Nightly build failed"
    assert shown.body.endswith("Step 2 failed: tests")  # Chromium puts the site's host first
    await notification_server.click(shown)
    await eventually(lambda: pages_opened(desktop), "the job's page opened")
    assert pages_opened(desktop) == [job_page(progress_url)]
    await eventually(lambda: notification_server.closed, "the notification closed")
    assert notification_server.closed == [shown.id]
    assert await to.notifications() == []


CLIENTS = """async () => (await self.clients.matchAll({ type: "window", includeUncontrolled: true })).map(
    (c) => [c.url, c.focused, c.visibilityState])"""

SHOW = """async (job) => {
    const { jobNotification } = await import("./notify.js");
    const { title, options } = jobNotification(job);
    await (await navigator.serviceWorker.ready).showNotification(title, options);
}"""


async def test_a_click_on_the_notification_brings_up_the_tab_already_on_the_jobs_page(
    desktop: BrowserContext, notification_server: NotificationServer, progress_url: str
) -> None:
    tab, to = await pushing(desktop, progress_url)
    await tab.goto(job_page(progress_url))
    # Out of focus: the tab reports the window's real focus (Playwright's emulation off),
    # and another window is brought to the front.
    await (await desktop.new_cdp_session(tab)).send("Emulation.setFocusEmulationEnabled", {"enabled": False})
    await (await desktop.new_page()).bring_to_front()

    async def tab_is(focused: bool) -> bool:
        return await to.worker.evaluate(CLIENTS) == [[job_page(progress_url), focused, "visible"]]

    await eventually(lambda: tab_is(focused=False), "the tab out of focus")
    await tab.evaluate(SHOW, PUSHED)  # as notifyJobEnded does where the constructor is refused
    [shown] = await eventually(lambda: notification_server.shown, "the notification on the desktop")
    await notification_server.click(shown)

    await eventually(lambda: tab_is(focused=True), "the tab brought into focus")
    assert await tab.evaluate("document.hasFocus()")
    assert pages_opened(desktop) == [job_page(progress_url)]  # that tab, and no new one
    await eventually(lambda: notification_server.closed, "the notification closed")
    assert notification_server.closed == [shown.id]


async def test_a_click_opens_no_page_of_another_site_whatever_the_push_said(
    desktop: BrowserContext, notification_server: NotificationServer, progress_url: str
) -> None:
    page, to = await pushing(desktop, progress_url)
    await page.close()
    await to.no_page_left()
    await to.push({**PUSHED, "url": "//elsewhere.example/login"})  # a path? another host
    [elsewhere] = await eventually(lambda: notification_server.shown, "the first notification")
    await notification_server.click(elsewhere)
    await eventually(lambda: notification_server.closed, "the first notification closed")

    # A later click opens its job's page: a page the first click opened would be there first.
    later = uuid.uuid4().hex
    await to.push({**PUSHED, "jobId": later, "url": f"/client/index.html?job={later}"})
    [ours] = await eventually(lambda: notification_server.shown[1:], "the second notification")
    await notification_server.click(ours)
    await eventually(lambda: pages_opened(desktop), "the second job's page opened")
    assert pages_opened(desktop) == [job_page(progress_url, later)]
    await eventually(lambda: notification_server.closed[1:], "the second notification closed")
    assert notification_server.closed == [elsewhere.id, ours.id]


#: Headless Chromium cannot subscribe offline (it waits on Google's push service for ever):
#: the page's PushManager answers with the test's subscription, and asks nothing else.
STUB_PUSH_MANAGER = """(subscription) => {
    window.askedFor = null;
    window.permissionAsked = 0;
    const ask = Notification.requestPermission.bind(Notification);
    Notification.requestPermission = async () => { window.permissionAsked += 1; return ask(); };
    PushManager.prototype.getSubscription = async () => null;
    PushManager.prototype.subscribe = async function (options) {
        window.askedFor = { key: Array.from(new Uint8Array(options.applicationServerKey)),
                            userVisibleOnly: options.userVisibleOnly };
        return { endpoint: subscription.endpoint, options, toJSON: () => subscription,
                 unsubscribe: async () => true };
    };
}"""


DISABLE_PUSH = """async (endpoint) => {
    const options = { applicationServerKey: new Uint8Array() };
    const subscription = await PushManager.prototype.subscribe.call(null, options);
    PushManager.prototype.getSubscription = async () => subscription;
    const disabled = await (await import("./notify.js")).disablePush();
    const headers = { "Content-Type": "application/json" };
    const body = JSON.stringify({ endpoint });
    const again = await fetch("/api/push/subscriptions", { method: "DELETE", headers, body });
    return [disabled, await again.json()];
}"""


async def test_enable_push_sends_the_subscription_and_a_job_end_is_pushed_to_it(
    push_stack: Stack,
    push_service: tuple[PushService, TestServer],
    vapid_key: ec.EllipticCurvePrivateKey,
) -> None:
    service, server = push_service
    base = push_stack.url("progress-service")
    keys = Browser.new(str(server.make_url("/push/ok/page")))
    async with allowed_on(base) as context:
        page = await context.new_page()
        await page.goto(f"{base}/client/index.html")
        await page.evaluate(STUB_PUSH_MANAGER, keys.subscription())
        await page.evaluate(
            """async () => {
                const button = Object.assign(document.createElement("button"), { id: "push-test" });
                document.body.append(button);
                await (await import("./notify.js")).enablePush(button);
            }"""
        )
        button = page.locator("#push-test")
        assert await button.text_content() == "Notify me even when closed"
        assert await page.evaluate("[window.askedFor, window.permissionAsked]") == [None, 0]  # not on load
        await button.click()
        await eventually(lambda: _text(button), "subscribed")
        assert await page.evaluate("window.permissionAsked") == 1
        asked = await page.evaluate("window.askedFor")
        point = vapid_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        assert asked == {"key": list(point), "userVisibleOnly": True}

        submitted = await page.evaluate(
            """async (job) => {
                const headers = { "Content-Type": "application/json" };
                const body = JSON.stringify(job);
                return (await fetch("/api/jobs", { method: "POST", headers, body })).json();
            }""",
            {"type": "build", "name": "From the page", "steps": 1, "durationSeconds": 0.2},
        )
        job_id = submitted["jobId"]
        await eventually(lambda: service.received, "the page's job end pushed")
        [received] = service.received
        assert received.path == "/push/ok/page"
        message = keys.read(received.body)
        assert (message["jobId"], message["name"]) == (job_id, "From the page")
        assert message["status"] == "COMPLETED"

        # disablePush forgets it on the server: a second DELETE finds nothing left.
        assert await page.evaluate(DISABLE_PUSH, keys.endpoint) == [True, {"removed": False}]


async def _text(button: Locator) -> bool:
    return await button.text_content() == "Push notifications are on"
