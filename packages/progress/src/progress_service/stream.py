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
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import HttpVersion11, web

from jobprogress_client.backoff import Backoff
from jobprogress_core.errors import BadRequest, NotFound, ServiceUnavailable
from jobprogress_core.limits import STREAM_LEASES, client_address
from jobprogress_core.logs import set_job_id
from jobprogress_core.model import EventType, Job, parse_stream_id, stream_id_after, valid_job_id
from jobprogress_core.redis import REDIS_ERRORS
from jobprogress_core.security import (
    QUERY_TOKEN_ALLOWED,
    Permission,
    authorize,
    check_credential,
    credential_of,
    identity_of,
)
from jobprogress_core.settings import ProgressSettings
from jobprogress_core.web import PROGRESS_SETTINGS as SETTINGS

from .frames import HEARTBEAT, Frame, reset_frame, retry_frame
from .hub import Hub
from .metrics import EVENTS_REPLAYED, OVERFLOWS, STREAMS_ACTIVE, STREAMS_CLOSED, STREAMS_OPENED
from .replay import REPLAY_PAGE, Log
from .viewer import Ending, Viewer

logger = logging.getLogger(__name__)

HUB = web.AppKey("hub", Hub)
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}


def sent_last_id(request: web.Request) -> str | None:
    """``Last-Event-ID`` header, else the ``lastEventId`` query parameter (for clients that
    cannot set headers), stripped; ``None`` when neither says anything."""
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.query.get("lastEventId")
    return value.strip() or None if value is not None else None


def requested_last_id(request: web.Request) -> str | None:
    """The :func:`sent_last_id` of a single stream; 400 if malformed."""
    value = sent_last_id(request)
    if value is None:
        return None
    try:
        parse_stream_id(value)
    except ValueError:
        raise BadRequest(
            "Malformed Last-Event-ID: expected <milliseconds>-<sequence>", details={"lastEventId": value[:64]}
        ) from None
    return value


class Writer:
    """A stream task's own writes to its client, each within the send timeout; :meth:`wrote`
    records them (as the hub records its own)."""

    def __init__(self, request: web.Request, response: web.StreamResponse, send_timeout: float) -> None:
        self.request = request
        self.response = response
        self.send_timeout = send_timeout

    def wrote(self, now: float) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        """Anything but an event: ``retry:``, ``reset``, a heartbeat."""
        async with asyncio.timeout(self.send_timeout):
            await self.response.write(data)
        self.wrote(asyncio.get_running_loop().time())

    async def drain(self) -> None:
        """Wait, at most the send timeout, until the client has taken what it was sent."""
        async with asyncio.timeout(self.send_timeout):
            await self.request.writer.drain()


class Sender(Writer):
    """The writes of a single stream's task, recorded on the client's :class:`Viewer`."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, viewer: Viewer, send_timeout: float
    ) -> None:
        super().__init__(request, response, send_timeout)
        self.viewer = viewer

    def wrote(self, now: float) -> None:
        self.viewer.wrote(now)

    async def event(self, frame: Frame) -> None:
        async with asyncio.timeout(self.send_timeout):
            await self.response.write(frame.sse)
        self.viewer.sent(frame, asyncio.get_running_loop().time())


async def progress_stream(request: web.Request) -> web.StreamResponse:
    return await counted_stream(request, _stream)


StreamHandler = Callable[[web.Request, Hub, ProgressSettings], Awaitable[web.StreamResponse]]


async def counted_stream(request: web.Request, handler: StreamHandler) -> web.StreamResponse:
    """Run a stream's ``handler`` if this instance serves fewer than its maximum of streams
    (503 otherwise), counting it among them while it runs."""
    request[QUERY_TOKEN_ALLOWED] = True  # EventSource sends no header: ?access_token= instead
    settings = request.app[SETTINGS]
    hub = request.app[HUB]
    if hub.streams >= settings.max_streams:
        raise ServiceUnavailable(
            f"This instance serves its maximum of {settings.max_streams} streams; try again shortly",
            retry_after=5,
        )
    hub.streams += 1  # no await since the check: the limit holds exactly
    try:
        return await handler(request, hub, settings)
    finally:
        hub.streams -= 1


async def _stream(request: web.Request, hub: Hub, settings: ProgressSettings) -> web.StreamResponse:
    await check_credential(request)
    job_id = request.match_info["job_id"]
    last_id = requested_last_id(request)
    job, first_id = None, None
    if valid_job_id(job_id):
        job, first_id = await hub.log.job(job_id, first_event=last_id is not None)
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
    leases = request.app[STREAM_LEASES]
    lease = await leases.take(await stream_subject(request, settings))
    try:
        return await _serve(request, job, last_id, reset, hub, settings)
    finally:
        await leases.release(lease)


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
    async def deliver(response: web.StreamResponse, chunked: bool) -> Ending:
        viewer = Viewer(job.id, last_id=None if reset else last_id)
        sender = Sender(request, response, viewer, settings.sse_send_timeout)
        await sender.write(retry_frame(settings.sse_retry_ms))
        if reset:
            await sender.write(reset_frame(job))
            Viewer.count_sent((EventType.RESET,))
        expires_at = (await credential_of(request)).expires_at
        return await _deliver(sender, hub, settings, chunked=chunked, expires_at=expires_at)

    return await serve_sse(request, deliver, what=f"job {job.id}")


async def serve_sse(
    request: web.Request, deliver: Callable[[web.StreamResponse, bool], Awaitable[Ending]], *, what: str
) -> web.StreamResponse:
    """Start the SSE response and run ``deliver`` (given it, and whether it is chunked) until
    the stream ends, counting how it ended. A client gone ends the request as a closed
    connection does; otherwise the response is ended cleanly."""
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    chunked = request.version >= HttpVersion11  # HTTP/1.0: the body ends with the connection
    if chunked:
        response.enable_chunked_encoding()
    await response.prepare(request)
    STREAMS_OPENED.inc()
    STREAMS_ACTIVE.inc()
    ending = Ending.ERROR
    try:
        ending = await deliver(response, chunked)
    except TimeoutError:
        ending = Ending.SEND_TIMEOUT
        logger.info("stream of %s: client too slow, disconnected", what)
    except (ConnectionResetError, asyncio.CancelledError):
        ending = Ending.GONE
        raise
    except Exception:
        # Headers are sent: an error can only end the stream (the client resumes by its ID).
        logger.exception("stream of %s ended by an unexpected error", what)
    finally:
        STREAMS_ACTIVE.dec()
        STREAMS_CLOSED.labels(ending.value).inc()
    if ending is Ending.GONE:
        # The hub found the connection closed: end as when a write of this task does.
        raise ConnectionResetError(f"the client of the stream of {what} is gone")
    if ending is not Ending.SEND_TIMEOUT:
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
    return response


async def _deliver(
    sender: Sender,
    hub: Hub,
    settings: ProgressSettings,
    *,
    chunked: bool,
    expires_at: float | None,
) -> Ending:
    """Catch up from the log, then follow live events, until the terminal event, or until
    the stream has been idle or open too long, or its credential expires (at
    ``expires_at``, epoch seconds: the client then resumes by its last ID, with a fresh
    one). Returns how the stream ended.

    A client that falls behind is given the send timeout to take what it has, then catches
    up from the log again. While Redis is unreachable the stream stays open with heartbeats
    and carries on from the client's last event once Redis is back.
    """
    viewer = sender.viewer
    loop = asyncio.get_running_loop()
    ends_at, limit = loop.time() + settings.sse_max_lifetime, Ending.LIFETIME
    if expires_at is not None and loop.time() + (expires_at - time.time()) < ends_at:
        ends_at, limit = loop.time() + max(expires_at - time.time(), 0.0), Ending.EXPIRED
    backoff = Backoff(first=0.1, cap=2.0)
    while True:
        if loop.time() >= ends_at:
            return limit
        if hub.closing:  # it ended every stream it had: this one is not to start again
            return Ending.SHUTDOWN
        try:
            cursor = await hub.subscribe(viewer)
        except REDIS_ERRORS as exc:
            await ride_out_outage(sender, exc, backoff, what=f"job {viewer.job_id}")
            continue
        try:
            ending = await catch_up(sender, hub.log, cursor)
            if ending is None:
                backoff.reset()
                transport = sender.request.transport
                if transport is None:
                    raise ConnectionResetError("client gone")
                hub.go_live(viewer, transport, chunked=chunked)
                ending = await _follow(sender, settings, ends_at, limit)
            if ending is not Ending.OVERFLOW:
                return ending
            OVERFLOWS.inc()
            logger.info("stream of job %s fell behind; catching up from the log", viewer.job_id)
            await sender.drain()
        except REDIS_ERRORS as exc:
            await ride_out_outage(sender, exc, backoff, what=f"job {viewer.job_id}")
        finally:
            hub.unsubscribe(viewer)


class EventSender(Protocol):
    """What :func:`catch_up` writes a viewer's events through."""

    @property
    def viewer(self) -> Viewer: ...

    async def event(self, frame: Frame) -> None: ...


class LineSender(Protocol):
    """What :func:`ride_out_outage` writes a heartbeat through."""

    async def write(self, data: bytes) -> None: ...


async def catch_up(sender: EventSender, log: Log, cursor: str) -> Ending | None:
    """Write the log after the client's last ID up to ``cursor``, then what the hub buffered
    meanwhile. :attr:`Ending.COMPLETE` when the terminal event went out, how the hub let the
    client go if it did, else ``None``: caught up."""
    viewer = sender.viewer
    while True:
        page = await log.frames(viewer.job_id, viewer.last_id, until=cursor, count=REPLAY_PAGE)
        for frame in page:
            await sender.event(frame)
            EVENTS_REPLAYED.inc()
            if frame.type.terminal:
                return Ending.COMPLETE
        if len(page) < REPLAY_PAGE:
            break
    while (buffered := viewer.pop()) is not None:
        if viewer.last_id is not None and not stream_id_after(buffered.id, viewer.last_id):
            continue
        await sender.event(buffered)
        if buffered.type.terminal:
            return Ending.COMPLETE
    return viewer.ending


async def _follow(sender: Sender, settings: ProgressSettings, ends_at: float, limit: Ending) -> Ending:
    """Live: the hub writes the events; this task keeps the heartbeat, the idle timeout and
    the end (at ``ends_at``, as ``limit``), and learns how the hub let the client go."""
    viewer = sender.viewer
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        if now >= ends_at:
            return limit
        idle_until = viewer.last_event_at + settings.sse_idle_timeout
        if now >= idle_until:
            return Ending.IDLE
        beat_at = viewer.last_write_at + settings.sse_heartbeat_seconds
        if now >= beat_at:
            await sender.write(HEARTBEAT)
            continue
        ending = await viewer.wait(min(beat_at, idle_until, ends_at) - now)
        if ending is not None:
            return ending


async def ride_out_outage(sender: LineSender, exc: Exception, backoff: Backoff, *, what: str) -> None:
    """Keep the client's line open through a Redis outage, then wait before the next try."""
    logger.warning("stream of %s: redis unavailable (%s); holding on", what, exc)
    await sender.write(HEARTBEAT)  # also tells us whether the client is still there
    await backoff.sleep()
