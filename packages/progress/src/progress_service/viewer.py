"""One live SSE client of this process: where it is in its job's log, when it was last written
to, and how its stream ended.

Two writers serve a client. The stream's own task writes the ``retry:`` line, the log while
the client catches up, and the heartbeats; once the client is *live*, the hub writes each new
event straight to its transport. Both record here what they wrote, so the client's last
event ID, the time of its last write and the count of events sent each have one place.

While the client catches up, the hub buffers live events for it (bounded). When the hub lets
it go (its terminal event written, its buffer full, its connection closed, the process
shutting down) it records the :class:`Ending` here and wakes the stream's task, which reads
it: no exception crosses from one task to the other.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from enum import StrEnum

from jobprogress_core.model import EventType

from .frames import Frame
from .metrics import EVENTS_SENT_BY_TYPE

__all__ = ["Ending", "Viewer"]


class Ending(StrEnum):
    """How a stream ended. The values are the ``reason`` label of
    ``jobprogress_sse_disconnects_total``, except :attr:`OVERFLOW`, which ends a stay in the
    hub, not the stream: the client fell behind and catches up from the log."""

    COMPLETE = "completed"
    IDLE = "idle_timeout"
    LIFETIME = "max_lifetime"
    EXPIRED = "credential_expired"  # the bearer token or app JWT it was opened with
    SEND_TIMEOUT = "send_timeout"
    GONE = "client_gone"
    SHUTDOWN = "shutdown"
    ERROR = "error"
    OVERFLOW = "overflow"


class Viewer:
    """One SSE client: what it was sent, and its place in the hub (a bounded buffer while it
    catches up, then a transport the hub writes to directly)."""

    __slots__ = (
        "_buffer",
        "_waiter",
        "chunked",
        "ending",
        "job_id",
        "last_event_at",
        "last_id",
        "last_write_at",
        "skip_until",
        "transport",
    )

    #: Whether the hub writes each event on its own (:meth:`write_live` framing it), rather
    #: than the same bytes for every viewer of the job: a stream of many jobs does.
    per_event = False

    def __init__(self, job_id: str, *, last_id: str | None = None) -> None:
        self.job_id = job_id
        #: The last event the client was sent, by either writer: where it resumes from.
        self.last_id = last_id
        #: Loop times of the last write to the client and of the last event (or going live).
        self.last_write_at = self.last_event_at = asyncio.get_running_loop().time()
        #: Why the hub let the client go; ``None`` while it is subscribed.
        self.ending: Ending | None = None
        #: What :meth:`wait` waits on, while it does; :meth:`end` resolves it.
        self._waiter: asyncio.Future[None] | None = None
        #: The live events buffered while catching up; made by the first one (a deque is
        #: about 600 bytes even empty, and most streams never buffer: a storm of thousands).
        self._buffer: deque[Frame] | None = None
        #: ``None`` while catching up; the client's transport once live.
        self.transport: asyncio.Transport | None = None
        #: Whether the hub frames its writes as HTTP/1.1 chunks.
        self.chunked = True
        #: A client's own ID the hub's cursor has not reached yet: events up to it are skipped.
        self.skip_until: str | None = None

    # -- what the writers record --------------------------------------------------------

    def wrote(self, now: float) -> None:
        """Something other than an event (a heartbeat, ``retry:``, ``reset``) went out at ``now``."""
        self.last_write_at = now

    def sent(self, frame: Frame, now: float) -> None:
        """The stream's task wrote ``frame`` at ``now``."""
        self.record(frame, now)
        Viewer.count_sent((frame.type,))

    def record(self, last: Frame, now: float) -> None:
        """Events ending with ``last`` went out at ``now`` (counted by the caller)."""
        self.last_id = last.id
        self.last_write_at = self.last_event_at = now

    @staticmethod
    def count_sent(types: Iterable[EventType], viewers: int = 1) -> None:
        """Events of ``types`` were sent to ``viewers`` clients: the one count of events sent."""
        for event_type in types:
            EVENTS_SENT_BY_TYPE[event_type].inc(viewers)

    # -- in the hub ---------------------------------------------------------------------

    def subscribed(self) -> None:
        """A new stay in the hub: catching up, nothing buffered, not ended."""
        self._buffer = None
        self.transport = None
        self.skip_until = None
        self.ending = None

    def push(self, frame: Frame, limit: int) -> None:
        """Buffer a live event while catching up; past ``limit`` events the buffer is
        dropped and the client ends :attr:`Ending.OVERFLOW`."""
        if self._buffer is None:
            self._buffer = deque()
        if len(self._buffer) >= limit:
            self._buffer = None
            self.end(Ending.OVERFLOW)
            return
        self._buffer.append(frame)

    def pop(self) -> Frame | None:
        """The next buffered event, or ``None`` (then see :attr:`ending`)."""
        return self._buffer.popleft() if self._buffer else None

    def go_live(self, transport: asyncio.Transport, *, chunked: bool, now: float) -> None:
        """From now on the hub writes to ``transport``. Call with the buffer drained and no
        ``await`` since, so no event falls between the buffer and the live writes."""
        if self._buffer:
            raise RuntimeError("go_live with buffered events")
        self.transport = transport
        self.chunked = chunked
        self.last_write_at = self.last_event_at = now

    def writable(self, limit: int) -> asyncio.Transport | None:
        """The live client's transport, or ``None``, and the client ended, when its connection
        has closed or more than ``limit`` bytes of it wait unsent."""
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            self.end(Ending.GONE)
            return None
        if transport.get_write_buffer_size() > limit:
            self.end(Ending.OVERFLOW)
            return None
        return transport

    def write_live(self, chunk: bytes, plain: bytes, last: Frame, now: float, *, limit: int) -> bool:
        """The hub's write of new events ending with ``last`` (``chunk`` framed as HTTP/1.1
        chunks, ``plain`` not). ``False``, and the client ended, when its connection has
        closed or more than ``limit`` bytes of it wait unsent."""
        transport = self.writable(limit)
        if transport is None:
            return False
        transport.write(chunk if self.chunked else plain)
        self.record(last, now)
        if last.type.terminal:
            self.end(Ending.COMPLETE)
        return True

    # -- ending -------------------------------------------------------------------------

    def end(self, ending: Ending) -> None:
        """The hub lets the client go: the first reason stands; the stream's task wakes up."""
        if self.ending is None:
            self.ending = ending
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def wait(self, timeout: float) -> Ending | None:
        """Until the hub lets the client go (how) or ``timeout`` seconds pass (``None``).
        A bare future and timer rather than an ``asyncio.Event`` per viewer (and its deque)."""
        if self.ending is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self.ending


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
