"""What a single stream's task writes to its client, and how it delivers a job's events:
catching up from the log, then following the live events that the hub writes, with
heartbeats, limits and the ride through a Redis outage. :mod:`.multi_stream` shares the
catch-up, the timers and the outage with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from aiohttp import web

from jobprogress_client.backoff import Backoff
from jobprogress_core.model import EventType, Job, stream_id_after
from jobprogress_core.redis import REDIS_ERRORS
from jobprogress_core.settings import ProgressSettings

from .admission import ADMISSION
from .frames import HEARTBEAT, Frame, reset_frame
from .hub import Hub
from .metrics import EVENTS_REPLAYED, OVERFLOWS
from .replay import REPLAY_PAGE, Log
from .viewer import Ending, Viewer

__all__ = [
    "EventSender",
    "LineSender",
    "Paced",
    "Sender",
    "Timers",
    "Writer",
    "catch_up",
    "deliver_job",
    "ride_out_outage",
]

logger = logging.getLogger(__name__)


class Paced(Protocol):
    """What a stream's timers read: when it last carried an event, and when it last wrote."""

    last_event_at: float
    last_write_at: float


class Timers:
    """A stream's end (its lifetime, or its credential's expiry at ``expires_at``, epoch
    seconds, if that comes first), its idle timeout and its heartbeat, in loop time."""

    __slots__ = ("beat", "ends_at", "idle", "limit")

    def __init__(self, settings: ProgressSettings, expires_at: float | None) -> None:
        now = asyncio.get_running_loop().time()
        self.ends_at, self.limit = now + settings.sse_max_lifetime, Ending.LIFETIME
        if expires_at is not None and now + (expires_at - time.time()) < self.ends_at:
            self.ends_at, self.limit = now + max(expires_at - time.time(), 0.0), Ending.EXPIRED
        self.idle = settings.sse_idle_timeout
        self.beat = settings.sse_heartbeat_seconds

    def over(self, now: float) -> Ending | None:
        """The stream's limit, once it is reached."""
        return self.limit if now >= self.ends_at else None

    def ending(self, now: float, paced: Paced) -> Ending | None:
        """The limit once it is reached, else :attr:`Ending.IDLE` once no event came for
        the idle timeout."""
        if now >= self.ends_at:
            return self.limit
        return Ending.IDLE if now >= paced.last_event_at + self.idle else None

    def delay(self, now: float, paced: Paced) -> float:
        """Seconds until the next heartbeat, the idle timeout or the end; at most 0 when a
        heartbeat is due (asked after :meth:`ending` said none)."""
        return min(paced.last_write_at + self.beat, paced.last_event_at + self.idle, self.ends_at) - now


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
    """The writes of a single stream's task, recorded on the client's :class:`Viewer`.

    What the stream opens with (``retry:``, a ``reset``) is :meth:`hold`-ed and goes out in
    one write with the first page of the log: one send (and one timeout) where there were
    one per line, which counts when thousands of streams open at once."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, viewer: Viewer, send_timeout: float
    ) -> None:
        super().__init__(request, response, send_timeout)
        self.viewer = viewer
        self.held = b""

    def wrote(self, now: float) -> None:
        self.viewer.wrote(now)

    def hold(self, data: bytes) -> None:
        """``data`` goes out with the next write."""
        self.held += data

    async def write(self, data: bytes) -> None:
        held, self.held = self.held, b""
        await super().write(held + data)

    async def flush(self) -> None:
        """Write what is held, if anything."""
        if self.held:
            await self.write(b"")

    async def events(self, frames: list[Frame]) -> None:
        """``frames`` (and what is held) in one write."""
        held, self.held = self.held, b""
        async with asyncio.timeout(self.send_timeout):
            await self.response.write(held + b"".join(frame.sse for frame in frames))
        now = asyncio.get_running_loop().time()
        self.viewer.record(frames[-1], now)
        Viewer.count_sent(frame.type for frame in frames)

    async def event(self, frame: Frame) -> None:
        await self.events([frame])


async def deliver_job(
    request: web.Request,
    job: Job,
    last_id: str | None,
    reset: bool,
    hub: Hub,
    settings: ProgressSettings,
    expires_at: float | None,
    response: web.StreamResponse,
    chunked: bool,
) -> Ending:
    """Open with ``retry:`` (and a ``reset`` when the client's last event has left the log),
    catch up from the log, then follow live events, until the terminal event, or until the
    stream has been idle or open too long, or its credential expires (at ``expires_at``,
    epoch seconds: the client then resumes by its last ID, with a fresh one). Returns how
    the stream ended.

    A client that falls behind is given the send timeout to take what it has, then catches
    up from the log again. While Redis is unreachable the stream stays open with heartbeats
    and carries on from the client's last event once Redis is back.
    """
    viewer = Viewer(job.id, last_id=None if reset else last_id)
    sender = Sender(request, response, viewer, settings.sse_send_timeout)
    # The stream's first bytes: sent with the first page of the log (see Sender).
    sender.hold(request.app[ADMISSION].retry_frame())
    if reset:
        sender.hold(reset_frame(job))
        Viewer.count_sent((EventType.RESET,))
    loop = asyncio.get_running_loop()
    timers = Timers(settings, expires_at)
    backoff = Backoff(first=0.1, cap=2.0)
    while True:
        if (ending := timers.over(loop.time())) is not None:
            return ending
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
                ending = await _follow(sender, timers)
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

    async def events(self, frames: list[Frame]) -> None: ...

    async def event(self, frame: Frame) -> None: ...

    async def flush(self) -> None: ...


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
        terminal = next((n for n, frame in enumerate(page) if frame.type.terminal), None)
        if terminal is not None:
            page = page[: terminal + 1]  # nothing follows a terminal event; just in case
        if page:
            await sender.events(page)
            EVENTS_REPLAYED.inc(len(page))
        if terminal is not None:
            return Ending.COMPLETE
        if len(page) < REPLAY_PAGE:
            break
    await sender.flush()  # before any live event, and before going live (which needs none)
    while (buffered := viewer.pop()) is not None:
        if viewer.last_id is not None and not stream_id_after(buffered.id, viewer.last_id):
            continue
        await sender.event(buffered)
        if buffered.type.terminal:
            return Ending.COMPLETE
    return viewer.ending


async def _follow(sender: Sender, timers: Timers) -> Ending:
    """Live: the hub writes the events; this task keeps the heartbeat, the idle timeout and
    the end, and learns how the hub let the client go."""
    viewer = sender.viewer
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        if (ending := timers.ending(now, viewer)) is not None:
            return ending
        if (delay := timers.delay(now, viewer)) <= 0:
            await sender.write(HEARTBEAT)
            continue
        ending = await viewer.wait(delay)
        if ending is not None:
            return ending


async def ride_out_outage(sender: LineSender, exc: Exception, backoff: Backoff, *, what: str) -> None:
    """Keep the client's line open through a Redis outage, then wait before the next try."""
    logger.warning("stream of %s: redis unavailable (%s); holding on", what, exc)
    await sender.write(HEARTBEAT)  # also tells us whether the client is still there
    await backoff.sleep()
