"""``GET /api/progress/{job_id}``: a job's events as Server-Sent Events.

Every event's SSE ``id`` is its Redis stream entry ID. Without ``Last-Event-ID`` the
client gets the whole log, then live events; with one, exactly what follows it. Errors
are answered as JSON before the stream starts; after the terminal event the stream ends,
and a reconnect after it gets ``204 No Content`` so EventSource stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, web

from jobprogress_core.errors import BadRequest, NotFound, ServiceUnavailable
from jobprogress_core.limits import STREAM_LEASES, client_address
from jobprogress_core.logs import set_job_id
from jobprogress_core.model import parse_stream_id, stream_id_after, valid_job_id
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

from .admission import ADMISSION
from .delivery import deliver_job
from .hub import Hub
from .metrics import STREAMS_ACTIVE, STREAMS_CLOSED, STREAMS_OPENED
from .viewer import Ending

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


async def progress_stream(request: web.Request) -> web.StreamResponse:
    return await counted_stream(request, _stream)


StreamHandler = Callable[[web.Request, Hub, ProgressSettings], Awaitable[web.StreamResponse]]


async def counted_stream(request: web.Request, handler: StreamHandler) -> web.StreamResponse:
    """Run a stream's ``handler`` once its credential (if any) verifies (401 otherwise), if
    this instance has a setup to spare this second and serves fewer than its maximum of
    streams (503 otherwise), counting it among them while it runs."""
    request[QUERY_TOKEN_ALLOWED] = True  # EventSource sends no header: ?access_token= instead
    settings = request.app[SETTINGS]
    hub = request.app[HUB]
    # A token that does not verify is refused first (it must not spend the instance's setups),
    # then a herd is turned away before any Redis work.
    await check_credential(request)
    request.app[ADMISSION].admit()
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
        expires_at = (await credential_of(request)).expires_at
        deliver = functools.partial(deliver_job, request, job, last_id, reset, hub, settings, expires_at)
        return await serve_sse(request, deliver, what=f"job {job.id}")
    finally:
        await leases.release(lease)


async def stream_subject(request: web.Request, settings: ProgressSettings) -> str:
    """Whose streams this one counts among: the caller's identity, or for someone holding
    only a share link, the client's address."""
    identity = await identity_of(request)
    return (
        identity if identity is not None else f"addr:{client_address(request, settings.trusted_proxy_hops)}"
    )


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
    # The headers are serialised by now (they go out with the first bytes). A stream may be
    # open for hours, and its header table, the security headers included, was a tenth of its
    # memory: about 2 KiB (bench/README, "Connect storm").
    response.headers.clear()
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
