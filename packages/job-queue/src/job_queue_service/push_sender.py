"""Web Push when a job ends: every job-queue instance (with VAPID keys set) follows the
stream of ended jobs (:meth:`jobprogress_core.keys.Keys.endings`, appended by the store right
after a terminal event, wherever the job ended: a worker, a reporter, a cancel, the sweeper)
in consumer group ``push``, so one instance handles each job, and pushes its end to each of
the owner's subscriptions.

The job's end never waits for this: the store only appends to a stream. Sending is bounded
(:data:`CONCURRENCY` jobs at a time; the stream is read no faster), each message has a
timeout, and a push service's 404/410 forgets that subscription. Delivery is at most once:
an instance stopped mid-send loses those messages (``NOACK``); a notification is a courtesy,
the job's own state is in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from jobprogress_core.keys import PUSH_GROUP, Keys
from jobprogress_core.model import Job
from jobprogress_core.redis import REDIS_ERRORS, create_redis, stop_reader, stream_entries
from jobprogress_core.settings import JobQueueSettings
from jobprogress_core.store import JobStore
from jobprogress_core.tasks import cancel_and_wait
from jobprogress_core.vapid import vapid_private_key
from jobprogress_core.web import JOB_QUEUE_SETTINGS, KEYS, REDIS, STORE

from .metrics import PUSH_MESSAGES
from .public_resolver import PublicResolver
from .push_subscriptions import Subscription, Subscriptions
from .webpush import MAX_PLAINTEXT, Outcome, Vapid, send, topic_of

__all__ = ["PUSH", "SUBSCRIPTIONS", "PushSender", "job_message", "push_ctx"]

logger = logging.getLogger(__name__)

#: Jobs whose messages are being sent at once, by one instance.
CONCURRENCY = 16
BLOCK_MS = 5000
#: Seconds one push service has to answer.
SEND_TIMEOUT = 10.0
#: Characters of a result or error a message carries (the page shows the rest).
TEXT_LIMIT = 1000
RETRY_SECONDS = 1.0

SUBSCRIPTIONS = web.AppKey("push_subscriptions", Subscriptions)


def job_message(job: Job) -> bytes:
    """What the service worker is sent about an ended job (``web/sw.js`` shows it): ``jobId``,
    ``name``, ``status``, ``result`` or ``error`` (shortened to fit one message), ``url``."""
    limit = TEXT_LIMIT
    while True:
        message: dict[str, Any] = {
            "jobId": job.id,
            "name": job.name[:200],
            "status": job.status.value,
            "url": f"/client/index.html?job={job.id}",
        }
        if job.result is not None:
            message["result"] = job.result[:limit]
        if job.error is not None:
            message["error"] = job.error[:limit]
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) <= MAX_PLAINTEXT:
            return data
        limit //= 2


class PushSender:
    """Follows the ended jobs and pushes each to its owner's subscriptions."""

    def __init__(
        self,
        reader: Redis,
        keys: Keys,
        store: JobStore,
        subscriptions: Subscriptions,
        vapid: Vapid,
        session: aiohttp.ClientSession,
        *,
        ttl: int,
    ) -> None:
        self.reader = reader
        self.keys = keys
        self.store = store
        self.subscriptions = subscriptions
        self.vapid = vapid
        self.session = session
        self.ttl = ttl
        self.consumer = uuid.uuid4().hex
        self.stopping = False
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Read and dispatch until :attr:`stopping`; failures are logged and retried."""
        grouped = False
        while not self.stopping:
            try:
                if not grouped:
                    await self._ensure_group()
                    grouped = True
                await self._read_once()
            except ResponseError as exc:
                grouped = "NOGROUP" not in str(exc)  # the stream was deleted (a flushed Redis)
                if grouped:
                    logger.warning("push: reading ended jobs failed: %s", exc)
                    await asyncio.sleep(RETRY_SECONDS)
            except REDIS_ERRORS as exc:
                if not self.stopping:
                    logger.warning("push: reading ended jobs failed: %s", exc)
                    await asyncio.sleep(RETRY_SECONDS)

    async def _read_once(self) -> None:
        reply = await self.reader.xreadgroup(
            PUSH_GROUP,
            self.consumer,
            {self.keys.endings(): ">"},
            count=CONCURRENCY,
            block=BLOCK_MS,
            noack=True,
        )
        for _, entries in stream_entries(reply):
            for _, fields in entries:
                await self._slots.acquire()  # at most CONCURRENCY jobs at once; the stream waits
                task = asyncio.create_task(self._notify(fields.get("jobId", "")), name="push-job")
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _ensure_group(self) -> None:
        try:
            await self.reader.xgroup_create(self.keys.endings(), PUSH_GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _notify(self, job_id: str) -> None:
        try:
            job = await self.store.get(job_id)
            if job is None or not job.status.terminal:
                return
            subscriptions = await self.subscriptions.of(job.owner)
            if subscriptions:
                await self.push(job, subscriptions)
        except REDIS_ERRORS as exc:
            logger.warning("push: job %s not notified: %s", job_id, exc)
        except Exception:
            logger.exception("push: job %s not notified", job_id)

    async def push(self, job: Job, subscriptions: list[Subscription]) -> None:
        message, topic = job_message(job), topic_of(job.id)
        outcomes = await asyncio.gather(
            *(
                send(self.session, self.vapid, sub, message, ttl=self.ttl, topic=topic, timeout=SEND_TIMEOUT)
                for sub in subscriptions
            )
        )
        for sub, (outcome, why) in zip(subscriptions, outcomes, strict=True):
            PUSH_MESSAGES.labels(outcome.value).inc()
            if outcome is Outcome.GONE:
                await self.subscriptions.remove(job.owner, sub.endpoint)
                logger.info("push: job %s: a subscription is gone (%s), removed", job.id, why)
            elif outcome is Outcome.FAILED:
                logger.warning("push: job %s: a push service refused or failed (%s)", job.id, why)
        logger.info(
            "push: job %s (%s) pushed to %d subscription(s)", job.id, job.status.value, len(subscriptions)
        )

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)


PUSH = web.AppKey("push", PushSender)


def vapid_of(settings: JobQueueSettings) -> Vapid | None:
    if settings.vapid_private_key is None or settings.vapid_subject is None:
        return None
    return Vapid(vapid_private_key(str(settings.vapid_private_key)), settings.vapid_subject)


async def push_ctx(app: web.Application) -> AsyncIterator[None]:
    """Subscriptions, and with VAPID keys set, the sender (after the Redis context)."""
    settings = app[JOB_QUEUE_SETTINGS]
    app[SUBSCRIPTIONS] = Subscriptions(
        app[REDIS],
        app[KEYS],
        ttl=settings.push_subscription_ttl,
        cap=settings.push_subscriptions_per_identity,
    )
    vapid = vapid_of(settings)
    if vapid is None:
        logger.info("web push is off: JOBPROGRESS_VAPID_PRIVATE_KEY is not set")
        yield
        return
    reader = create_redis(settings, block_ms=BLOCK_MS, max_connections=1, role="push-reader")
    timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT, connect=5)
    # Only to public addresses: an endpoint's host name is checked where it resolves.
    connector = aiohttp.TCPConnector(resolver=PublicResolver())
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sender = PushSender(
            reader, app[KEYS], app[STORE], app[SUBSCRIPTIONS], vapid, session, ttl=settings.push_ttl
        )
        app[PUSH] = sender
        task = asyncio.create_task(sender.run(), name="push-sender")
        yield
        sender.stopping = True
        await stop_reader(task, reader)
        await sender.stop()
        with contextlib.suppress(*REDIS_ERRORS, ResponseError):  # NOACK: it holds nothing pending
            await app[REDIS].xgroup_delconsumer(app[KEYS].endings(), PUSH_GROUP, sender.consumer)
