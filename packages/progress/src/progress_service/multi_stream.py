"""``GET /api/progress?job=...`` and ``GET /api/progress/mine``: many jobs on one SSE stream.

The events are those of single streams (each ``data`` carries its ``jobId``); each event's
``id`` is a compound ID (:mod:`.compound_ids`) holding every job's position, so one
``Last-Event-ID`` resumes all of them exactly, on any instance, with nothing kept per client
on the server. A job whose position has left its log gets a ``reset`` of its own. A job
leaves the stream with its terminal event; a ``job=`` stream ends when all of them have (a
reconnect then gets ``204``), a ``mine`` stream goes on: the caller's jobs submitted while it
is open join it, announced by their feed (:meth:`jobprogress_core.keys.Keys.feed`).

The rules of single streams hold for the whole request: a job that is not the caller's (or
shared with them) refuses it with ``404``, naming no other job; it counts as one stream
towards the limits; heartbeats are comments with no ID.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from aiohttp import web

from jobprogress_client.backoff import Backoff
from jobprogress_core.app_tokens import Scope
from jobprogress_core.errors import BadRequest, NotFound, ServiceUnavailable
from jobprogress_core.keys import feed_topic
from jobprogress_core.limits import STREAM_LEASES
from jobprogress_core.model import EventType, Job, stream_id_after, valid_job_id
from jobprogress_core.redis import REDIS_ERRORS
from jobprogress_core.security import (
    Permission,
    authorize,
    credential_of,
    require_identity,
)
from jobprogress_core.settings import ProgressSettings
from jobprogress_core.web import STORE

from .admission import ADMISSION
from .compound_ids import DONE, JOBS, MINE, CompoundId, Encoder, parse_compound_id, smallest_ms
from .delivery import Timers, Writer, ride_out_outage
from .delivery import catch_up as catch_up_log
from .frames import HEARTBEAT, Frame, reset_frame
from .hub import Hub
from .metrics import OVERFLOWS
from .multiplex import Member, Multiplex
from .stream import counted_stream, sent_last_id, serve_sse, stream_subject
from .viewer import Ending, Viewer

__all__ = ["MAX_STREAM_JOBS", "MINE_MOST", "RECENT_JOBS", "jobs_stream", "mine_stream"]

logger = logging.getLogger(__name__)

#: Jobs one ``job=`` stream may name.
MAX_STREAM_JOBS = 50
#: How far back a ``mine`` stream opened afresh looks for the caller's unfinished jobs.
RECENT_JOBS = 100
#: The most jobs a ``mine`` stream follows at once (the next ones join as these end).
MINE_MOST = 100


async def jobs_stream(request: web.Request) -> web.StreamResponse:
    return await counted_stream(request, _jobs)


async def mine_stream(request: web.Request) -> web.StreamResponse:
    return await counted_stream(request, _mine)


def requested_compound_id(request: web.Request, kind: str) -> CompoundId | None:
    """The ``Last-Event-ID`` (or ``lastEventId``) of a stream of many jobs; 400 if malformed
    or written by a stream of the other kind."""
    value = sent_last_id(request)
    if value is None:
        return None
    try:
        parsed = parse_compound_id(value)
    except ValueError as exc:
        raise BadRequest(
            f"Malformed Last-Event-ID for a stream of many jobs: {exc}", details={"lastEventId": value[:64]}
        ) from None
    if parsed.kind != kind:
        raise BadRequest(
            "This Last-Event-ID belongs to another kind of stream", details={"lastEventId": value[:64]}
        )
    return parsed


async def _jobs(request: web.Request, hub: Hub, settings: ProgressSettings) -> web.StreamResponse:
    job_ids = request.query.getall("job", [])
    if not job_ids:
        raise BadRequest("Name the jobs to stream: ?job=<id>&job=<id>...")
    if len(job_ids) > MAX_STREAM_JOBS:
        raise BadRequest(f"At most {MAX_STREAM_JOBS} jobs per stream", details={"jobs": len(job_ids)})
    if len(set(job_ids)) != len(job_ids):
        raise BadRequest("A job is named twice", details={"jobs": len(job_ids)})
    for job_id in job_ids:
        if not valid_job_id(job_id):
            raise NotFound(f"No job {job_id[:64]!r}")
    last = requested_compound_id(request, JOBS)
    positions: list[str | None] = [None] * len(job_ids) if last is None else last.positions
    if len(positions) != len(job_ids):
        raise BadRequest(
            "This Last-Event-ID is for another set of jobs",
            details={"jobs": len(job_ids), "positions": len(positions)},
        )
    found = await request.app[STORE].get_many_with_first_events(job_ids)
    for job_id, (job, _), position in zip(job_ids, found, positions, strict=True):
        if job is None and position != DONE:
            raise NotFound(f"No job {job_id[:64]!r}")
        if job is not None:
            await authorize(request, Permission.READ, owner=job.owner, job_id=job.id)
    multiplex = Multiplex(JOBS, Encoder(smallest_ms(positions, default=_now_ms())))
    resets: dict[str, Job] = {}
    for job_id, (job, first_id), position in zip(job_ids, found, positions, strict=True):
        if job is None:  # sent to its end, and expired since
            multiplex.mark_done(multiplex.add(job_id))
            continue
        _member(multiplex, job, first_id, position, resets)
    if not multiplex.open_members:
        return web.Response(status=204)
    return await _open(request, hub, settings, multiplex, resets)


async def _mine(request: web.Request, hub: Hub, settings: ProgressSettings) -> web.StreamResponse:
    owner = await require_identity(request, Scope.READ)
    store = request.app[STORE]
    last = requested_compound_id(request, MINE)
    if last is None:
        feed = await hub.log.last_event_id(feed_topic(owner)) or "0-0"
        recent = await store.feed_entries(owner, until=feed, count=RECENT_JOBS)
        handles = [entry_id for entry_id, _ in reversed(recent)]
        job_ids: list[str | None] = await store.feed_jobs(owner, handles)
        positions: list[str | None] = [None] * len(handles)
    else:
        feed = last.feed or "0-0"
        handles, positions = last.handles, last.positions
        if len(handles) > MINE_MOST:
            raise BadRequest(
                f"A stream of your jobs follows at most {MINE_MOST}", details={"jobs": len(handles)}
            )
        job_ids = await store.feed_jobs(owner, handles)
    await store.keep_feed(owner)  # while someone watches, the feed lives on
    multiplex = Multiplex(
        MINE, Encoder(smallest_ms([feed, *handles, *positions], default=_now_ms())), most=MINE_MOST
    )
    multiplex.follow_feed(feed_topic(owner), feed)
    listed = [
        (job_id, handle, position)
        for job_id, handle, position in zip(job_ids, handles, positions, strict=True)
        if job_id is not None and position != DONE
    ]
    found = await store.get_many_with_first_events([job_id for job_id, _, _ in listed])
    resets: dict[str, Job] = {}
    for (job, first_id), (_, handle, position) in zip(found, listed, strict=True):
        if job is None or job.owner != owner or job.id in multiplex.jobs:
            continue  # expired since: nothing of it is left to send
        if last is None and job.status.terminal:
            continue  # a fresh stream follows the unfinished jobs, and the new ones
        _member(multiplex, job, first_id, position, resets, handle=handle)
    return await _open(request, hub, settings, multiplex, resets)


def _member(
    multiplex: Multiplex,
    job: Job,
    first_id: str | None,
    position: str | None,
    resets: dict[str, Job],
    *,
    handle: str | None = None,
) -> Member | None:
    """Add ``job`` to the stream at ``position`` (400 if that is ahead of its log); a job
    already done there joins as done (``None`` for a ``mine`` stream, which leaves it out)."""
    if position is not None and position != DONE:
        if job.last_event_id and stream_id_after(position, job.last_event_id):
            raise BadRequest("Last-Event-ID is ahead of a job's events", details={"jobId": job.id})
        if job.status.terminal and position == job.last_event_id:
            position = DONE
    if position == DONE:
        if multiplex.kind != JOBS:
            return None
        member = multiplex.add(job.id)
        multiplex.mark_done(member)
        return member
    if position is not None and first_id is not None and stream_id_after(first_id, position):
        resets[job.id] = job  # its ID keeps the position until the reset is written
        return multiplex.add(job.id, last_id=None, handle=handle, shown=position)
    return multiplex.add(job.id, last_id=position, handle=handle)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _open(
    request: web.Request, hub: Hub, settings: ProgressSettings, multiplex: Multiplex, resets: dict[str, Job]
) -> web.StreamResponse:
    if hub.closing:
        raise ServiceUnavailable("This instance is shutting down; reconnect", retry_after=1)

    async def deliver(response: web.StreamResponse, chunked: bool) -> Ending:
        sender = ManySender(request, response, multiplex, settings.sse_send_timeout)
        try:
            await sender.write(request.app[ADMISSION].retry_frame())
            expires_at = (await credential_of(request)).expires_at
            return await _deliver(sender, hub, settings, resets, chunked=chunked, expires_at=expires_at)
        finally:
            for member in multiplex.everyone:
                hub.unsubscribe(member)

    async with request.app[STREAM_LEASES].hold(await stream_subject(request, settings)):
        return await serve_sse(request, deliver, what=f"{len(multiplex.members)} jobs")


class ManySender(Writer):
    """The writes of the task of a stream of many jobs, recorded on its :class:`Multiplex`."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, multiplex: Multiplex, send_timeout: float
    ) -> None:
        super().__init__(request, response, send_timeout)
        self.multiplex = multiplex

    def wrote(self, now: float) -> None:
        self.multiplex.wrote(now, event=False)

    async def event(self, member: Member, frame: Frame) -> None:
        payload = self.multiplex.frame(member, frame)  # no await before the write: IDs in order
        now = asyncio.get_running_loop().time()
        member.record(frame, now)
        if payload is not None:
            async with asyncio.timeout(self.send_timeout):
                await self.response.write(payload)
            Viewer.count_sent((frame.type,))
            self.multiplex.wrote(now, event=True)

    def of(self, member: Member) -> MemberSender:
        return MemberSender(self, member)


class MemberSender:
    """What :func:`.stream.catch_up` writes through: one member's events, on the stream."""

    def __init__(self, sender: ManySender, member: Member) -> None:
        self.sender = sender
        self.viewer = member

    async def event(self, frame: Frame) -> None:
        await self.sender.event(self.viewer, frame)

    async def events(self, frames: list[Frame]) -> None:
        """One by one: each event of a stream of many jobs gets an ID of its own."""
        for frame in frames:
            await self.sender.event(self.viewer, frame)

    async def flush(self) -> None:
        """Nothing held: the stream wrote its ``retry:`` when it opened."""


async def _deliver(
    sender: ManySender,
    hub: Hub,
    settings: ProgressSettings,
    resets: dict[str, Job],
    *,
    chunked: bool,
    expires_at: float | None,
) -> Ending:
    """Catch each member up from the log and put it live, one at a time; deal with the
    members the hub lets go and the jobs that join; keep the heartbeat, the idle timeout
    and the end, as a single stream does."""
    multiplex = sender.multiplex
    loop = asyncio.get_running_loop()
    timers = Timers(settings, expires_at)
    pending: deque[Member] = deque(multiplex.open_members)
    if multiplex.feed is not None:
        pending.appendleft(multiplex.feed)
    backoff = Backoff(first=0.1, cap=2.0)
    while True:
        now = loop.time()
        if (ending := timers.over(now)) is not None:
            return ending
        endings, joined = multiplex.take()
        for member in endings:
            ending = await _settle(sender, hub, member, pending)
            if ending is not None:
                return ending
        pending.extend(joined)
        if multiplex.kind == JOBS and not multiplex.open_members:
            return Ending.COMPLETE
        if hub.closing:  # it ended every stream it had: no member is to join again
            return Ending.SHUTDOWN
        if pending:
            member = pending.popleft()
            try:
                ending = await _join(sender, hub, member, resets, chunked=chunked)
            except REDIS_ERRORS as exc:
                hub.unsubscribe(member)
                pending.appendleft(member)
                await ride_out_outage(sender, exc, backoff, what=f"stream of {len(multiplex.members)} jobs")
                continue
            backoff.reset()
            if ending is not None:
                member.end(ending)  # dealt with with the others, above
            continue
        if (ending := timers.ending(now, multiplex)) is not None:
            return ending
        if (delay := timers.delay(now, multiplex)) <= 0:
            await sender.write(HEARTBEAT)
            continue
        await multiplex.wait(delay)


async def _join(
    sender: ManySender, hub: Hub, member: Member, resets: dict[str, Job], *, chunked: bool
) -> Ending | None:
    """Subscribe ``member``, write its ``reset`` if it has one, then its log up to the hub's
    cursor and what the hub buffered, then put it live. How it ended if it did."""
    cursor = await hub.subscribe(member)
    reset = resets.pop(member.job_id, None)
    if reset is not None:
        await sender.write(reset_frame(reset))
        sender.multiplex.reset_written(member)
        Viewer.count_sent((EventType.RESET,))
    ending = await catch_up_log(sender.of(member), hub.log, cursor)
    if ending is None:
        transport = sender.request.transport
        if transport is None:
            raise ConnectionResetError("client gone")
        hub.go_live(member, transport, chunked=chunked)
    return ending


async def _settle(sender: ManySender, hub: Hub, member: Member, pending: deque[Member]) -> Ending | None:
    """Deal with a member the hub let go: done, or behind (caught up again once the client
    has taken what it was sent); any other ending ends the stream (returned)."""
    ending = member.ending
    if ending is Ending.COMPLETE:
        hub.unsubscribe(member)
        return None
    if ending is Ending.OVERFLOW:
        OVERFLOWS.inc()
        logger.info("a stream of many jobs fell behind on job %s; catching it up from the log", member.job_id)
        hub.unsubscribe(member)
        await sender.drain()
        pending.append(member)
        return None
    return ending or Ending.ERROR
