"""The page's notifications in a real Chromium: ``web/notify.js`` while the tab is hidden, and
``web/sw.js`` showing a Web Push message, delivered through the DevTools protocol
(``ServiceWorker.deliverPushMessage``: a headless browser has no push service to subscribe
to, so the push service's leg is the one part played)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import BrowserContext, CDPSession, Locator, Page, async_playwright

from jobprogress_testing import Stack, eventually

from .conftest import CHROMIUM
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


async def test_the_service_worker_shows_a_pushed_job_end(context: BrowserContext, progress_url: str) -> None:
    page = await open_page(context, progress_url)
    await page.evaluate(
        """async () => {
            await navigator.serviceWorker.register("sw.js", { type: "module" });
            await navigator.serviceWorker.ready;
        }"""
    )
    workers = context.service_workers
    worker = workers[0] if workers else await context.wait_for_event("serviceworker")
    # No page of the site is left (the worker shows what it is pushed): the protocol is
    # driven from a blank page, which sees the browser's service workers all the same.
    blank = await context.new_page()
    cdp = await context.new_cdp_session(blank)
    registration = await registration_of(cdp, f"{progress_url}/client/")
    await page.close()

    async def no_page_left() -> bool:  # a page still closing could count as in front
        windows = await worker.evaluate(
            "async () => (await self.clients.matchAll({ type: 'window', includeUncontrolled: true })).length"
        )
        return windows == 0

    await eventually(no_page_left, "the worker seeing no page of the site")
    message = {**JOB, "url": f"/client/index.html?job={JOB['jobId']}"}
    await cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": progress_url, "registrationId": registration, "data": json.dumps(message)},
    )

    async def shown() -> Any:
        return await worker.evaluate(
            """async () => (await self.registration.getNotifications()).map(
                (n) => ({ title: n.title, body: n.body, tag: n.tag, url: n.data.url }))"""
        )

    assert await eventually(shown, "the pushed notification") == [
        {
            "title": "Nightly build failed",
            "body": "Step 2 failed: tests",
            "tag": f"job-{JOB['jobId']}",
            "url": f"{progress_url}/client/index.html?job={JOB['jobId']}",
        }
    ]


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
