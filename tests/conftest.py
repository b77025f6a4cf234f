"""Fixtures of the black-box tests; the stack itself comes from the jobprogress pytest plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright

from jobprogress_core.keys import Keys
from jobprogress_core.model import Job
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import Stack

from .desktop_fakes import notification_server
from .push_fakes import push_service, push_stack, vapid_key

# Web Push's fixtures (push_fakes.py) and the desktop's notification server (desktop_fakes.py)
__all__ = ["notification_server", "push_service", "push_stack", "vapid_key"]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def http(jobprogress_http: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """The plugin's client under the short name these tests use: acting as
    ``jobprogress_identity``, no total timeout, no cap on connections."""
    return jobprogress_http


@pytest.fixture
def queue_url(jobprogress_stack: Stack) -> str:
    return jobprogress_stack.url("job-queue-service")


@pytest.fixture
def progress_url(jobprogress_stack: Stack) -> str:
    return jobprogress_stack.url("progress-service")


@pytest.fixture
async def stack_store(jobprogress_stack: Stack) -> AsyncIterator[JobStore]:
    """The store the services use (same Redis, same key prefix)."""
    assert jobprogress_stack.redis_url is not None
    settings = Settings.from_env("job-queue-service", {"REDIS_URL": jobprogress_stack.redis_url})
    redis = create_redis(settings)
    yield JobStore(redis, Keys(settings.key_prefix, settings.partitions))
    await redis.aclose()


@pytest.fixture
def new_job(stack_store: JobStore, jobprogress_identity: str) -> Callable[[], Awaitable[str]]:
    """Create a job no worker will take (it is never queued): the test plays the worker. It
    belongs to the identity of the ``http`` client (``jobprogress_identity``)."""

    async def make() -> str:
        job = Job.new("build", {}, owner=jobprogress_identity)
        await stack_store.create(job, {"status": "QUEUED", "message": "test"})
        return job.id

    return make


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A tab of a real headless Chromium (Debian's, installed by scripts/bootstrap)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            context = await browser.new_context()
            yield await context.new_page()
        finally:
            await browser.close()
