"""``GET /api/progress/{job_id}``: a job's events as Server-Sent Events.

Every event's SSE ``id`` is its Redis stream entry ID. Without ``Last-Event-ID`` the
client gets the whole log, then live events; with one, exactly what follows it. Errors
are answered as JSON before the stream starts; after the terminal event the stream ends,
and a reconnect after it gets ``204 No Content`` so EventSource stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import HttpVersion11, web

from jobprogress_core.errors import BadRequest, NotFound, ServiceUnavailable
from jobprogress_core.limits import STREAM_LEASES, client_address
from jobprogress_core.logs import set_job_id
from jobprogress_core.model import (
    Event,
    EventType,
    Job,
    dumps,
    encode_sse,
    parse_stream_id,
    stream_id_after,
    valid_job_id,
)
from jobprogress_core.redis import REDIS_ERRORS
from jobprogress_core.security import Permission, authorize, identity_of
from jobprogress_core.settings import ProgressSettings
from jobprogress_core.store import JobStore
from jobprogress_core.web import PROGRESS_SETTINGS as SETTINGS
from jobprogress_core.web import STORE

from .hub import COMPLETED, Closed, Hub, Overflowed, Subscription
from .metrics import EVENTS_REPLAYED, EVENTS_SENT_BY_TYPE, STREAMS_ACTIVE, STREAMS_CLOSED, STREAMS_OPENED

logger = logging.getLogger(__name__)

HUB = web.AppKey("hub", Hub)
REPLAY_PAGE = 500
HEARTBEAT = b": ping\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}


def requested_last_id(request: web.Request) -> str | None:
    """``Last-Event-ID`` header, else the ``lastEventId`` query parameter; 400 if malformed."""
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.query.get("lastEventId")
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    try:
        parse_stream_id(value)
    except ValueError:
        raise BadRequest(
            "Malformed Last-Event-ID: expected <milliseconds>-<sequence>", details={"lastEventId": value[:64]}
        ) from None
    return value


class SseWriter:
    """Writes to one client with a send timeout, counting what goes out and when."""

    def __init__(self, request: web.Request, response: web.StreamResponse, send_timeout: float) -> None:
        self.request = request
        self.response = response
        self.send_timeout = send_timeout
        self.last_id: str | None = None
        self.last_event_at = self.last_write_at = asyncio.get_running_loop().time()

    async def write(self, data: bytes) -> None:
        async with asyncio.timeout(self.send_timeout):
            await self.response.write(data)
        self.last_write_at = asyncio.get_running_loop().time()

    async def event(self, event: Event) -> None:
        await self.write(event.sse)
        self.last_id = event.id
        self.last_event_at = self.last_write_at
        EVENTS_SENT_BY_TYPE[event.type].inc()

    async def drain(self) -> None:
        """Wait, at most the send timeout, until the client has taken what it was sent."""
        async with asyncio.timeout(self.send_timeout):
            await self.request.writer.drain()


async def progress_stream(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    hub = request.app[HUB]
    if hub.streams >= settings.max_streams:
        raise ServiceUnavailable(
            f"This instance serves its maximum of {settings.max_streams} streams; try again shortly",
            retry_after=5,
        )
    hub.streams += 1  # no await since the check: the limit holds exactly
    try:
        return await _stream(request, hub, settings)
    finally:
        hub.streams -= 1


async def _stream(request: web.Request, hub: Hub, settings: ProgressSettings) -> web.StreamResponse:
    store = request.app[STORE]
    job_id = request.match_info["job_id"]
    last_id = requested_last_id(request)
    job, first_id = None, None
    if valid_job_id(job_id):
        job, first_id = (
            await store.get_with_first_event(job_id) if last_id else (await store.get(job_id), None)
        )
    if job is None:
        raise NotFound(f"No job {job_id[:64]!r}")
    await authorize(request, Permission.READ, owner=job.owner, job_id=job.id)
    set_job_id(job.id)
    if hub.closing:
        raise ServiceUnavailable("This instance is shutting down; reconnect", retry_after=1)
    if last_id and job.last_event_id and stream_id_after(last_id, job.last_event_id):
        # Every event a client can have seen is at or before the job's last event ID.
        raise BadRequest("Last-Event-ID is ahead of this job's events", details={"lastEventId": last_id[:64]})
    if job.status.terminal and last_id == job.last_event_id:
        return web.Response(status=204)
    reset = bool(last_id and first_id and stream_id_after(first_id, last_id))
    async with request.app[STREAM_LEASES].hold(await stream_subject(request, settings)):
        return await _serve(request, job, last_id, reset, hub, settings)


async def stream_subject(request: web.Request, settings: ProgressSettings) -> str:
    """Whose streams this one counts among: the caller's identity, or for someone holding
    only a share link, the client's address."""
    identity = await identity_of(request)
    return (
        identity if identity is not None else f"addr:{client_address(request, settings.trusted_proxy_hops)}"
    )


async def _serve(
    request: web.Request, job: Job, last_id: str | None, reset: bool, hub: Hub, settings: ProgressSettings
) -> web.StreamResponse:
    store = request.app[STORE]
    job_id = job.id
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    chunked = request.version >= HttpVersion11  # HTTP/1.0: the body ends with the connection
    if chunked:
        response.enable_chunked_encoding()
    await response.prepare(request)
    writer = SseWriter(request, response, settings.sse_send_timeout)
    writer.last_id = None if reset else last_id
    STREAMS_OPENED.inc()
    STREAMS_ACTIVE.inc()
    reason = "error"
    try:
        await writer.write(f"retry: {settings.sse_retry_ms}\n\n".encode())
        if reset:
            await writer.write(encode_sse(EventType.RESET.value, dumps(job.to_json())))
            EVENTS_SENT_BY_TYPE[EventType.RESET].inc()
        reason = await _deliver(writer, store, hub, job_id, settings, chunked=chunked)
    except Closed:
        reason = "shutdown"
    except TimeoutError:
        reason = "send_timeout"
        logger.info("stream of job %s: client too slow, disconnected", job_id)
    except (ConnectionResetError, asyncio.CancelledError):
        reason = "client_gone"
        raise
    except Exception:
        # Headers are sent: an error can only end the stream (the client resumes by its ID).
        logger.exception("stream of job %s ended by an unexpected error", job_id)
    finally:
        STREAMS_ACTIVE.dec()
        STREAMS_CLOSED.labels(reason).inc()
    if reason != "send_timeout":
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
    return response


async def _deliver(
    writer: SseWriter, store: JobStore, hub: Hub, job_id: str, settings: ProgressSettings, *, chunked: bool
) -> str:
    """Catch up from the log, then follow live events, until the terminal event, or until
    the stream has been idle or open too long (the client then resumes by its last ID).
    Returns why the stream ended.

    A client that falls behind is given the send timeout to take what it has, then catches
    up from the log again. While Redis is unreachable the stream stays open with heartbeats
    and carries on from the client's last event once Redis is back.
    """
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + settings.sse_max_lifetime
    backoff = 0.1
    while True:
        if loop.time() >= ends_at:
            return "max_lifetime"
        try:
            subscription, cursor = await hub.subscribe(job_id)
        except REDIS_ERRORS as exc:
            backoff = await _ride_out_outage(writer, job_id, exc, backoff)
            continue
        try:
            if await _catch_up(writer, store, subscription, cursor):
                return "completed"
            backoff = 0.1
            transport = writer.request.transport
            if transport is None:
                raise ConnectionResetError("client gone")
            hub.go_live(subscription, transport, chunked=chunked, last_id=writer.last_id)
            return await _follow(writer, subscription, settings, ends_at)
        except Overflowed:
            logger.info("stream of job %s fell behind; catching up from the log", job_id)
            writer.last_id = subscription.last_id or writer.last_id
            await writer.drain()
        except REDIS_ERRORS as exc:
            backoff = await _ride_out_outage(writer, job_id, exc, backoff)
        finally:
            hub.unsubscribe(subscription)


async def _catch_up(writer: SseWriter, store: JobStore, subscription: Subscription, cursor: str) -> bool:
    """Write the log after the client's last ID up to ``cursor``, then what the hub buffered
    meanwhile. ``True`` when the terminal event went out."""
    job_id = subscription.job_id
    while True:
        page = await store.events(job_id, writer.last_id, until=cursor, count=REPLAY_PAGE)
        for event in page:
            await writer.event(event)
            EVENTS_REPLAYED.inc()
            if event.type.terminal:
                return True
        if len(page) < REPLAY_PAGE:
            break
    while (buffered := subscription.pop()) is not None:
        if writer.last_id is not None and not stream_id_after(buffered.id, writer.last_id):
            continue
        await writer.event(buffered)
        if buffered.type.terminal:
            return True
    return False


async def _follow(
    writer: SseWriter, subscription: Subscription, settings: ProgressSettings, ends_at: float
) -> str:
    """Live: the hub writes the events; this task keeps the heartbeat, the idle timeout and
    the lifetime, and learns how the subscription ended."""
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        if now >= ends_at:
            return "max_lifetime"
        idle_until = max(writer.last_event_at, subscription.last_sent) + settings.sse_idle_timeout
        if now >= idle_until:
            return "idle_timeout"
        beat_at = max(writer.last_write_at, subscription.last_sent) + settings.sse_heartbeat_seconds
        if now >= beat_at:
            await writer.write(HEARTBEAT)
            continue
        if await subscription.wait(min(beat_at, idle_until, ends_at) - now) == COMPLETED:
            return "completed"


async def _ride_out_outage(writer: SseWriter, job_id: str, exc: Exception, backoff: float) -> float:
    """Keep the client's line open through a Redis outage; the next backoff."""
    logger.warning("stream of job %s: redis unavailable (%s); holding on", job_id, exc)
    await writer.write(HEARTBEAT)  # also tells us whether the client is still there
    await asyncio.sleep(backoff)
    return min(backoff * 2, 2.0)
