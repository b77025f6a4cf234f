"""Fan-out hub: one Redis reader per process, dispatching events to local subscribers.

The reader issues one ``XREAD BLOCK`` over the event streams of every job that has a
subscriber, so the Redis connections of a process stay constant whatever the number of
clients. Each event is framed once (its data as the worker wrote it, never decoded), then
handed to every subscriber of its job.

A subscription has two phases. While its stream catches up from the log, live events are
buffered for it (bounded: past ``queue_size`` it is cut loose). Once it has written the log
and that buffer, it goes *live*: the hub then writes each event's bytes straight to the
client's transport, with no task switch and no copy per subscriber. A live client whose
unsent bytes pass ``buffer_bytes`` is cut loose too. A subscriber cut loose (``Overflowed``)
catches up from the log by its own last ID, so nobody else waits for it and nothing is lost.

Seam: :meth:`Hub.subscribe` returns the hub's cursor for the job. Everything up to the
cursor is in the log (read it with XRANGE); everything after it arrives through the
subscription. Subscribing and dispatching run on one event loop, so nothing falls between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque

from redis.asyncio import Redis

from jobprogress_core.backoff import Backoff
from jobprogress_core.keys import Keys
from jobprogress_core.model import stream_id_after
from jobprogress_core.redis import REDIS_ERRORS, StreamReader, stop_reader
from jobprogress_core.store import JobStore

from .frames import Frame
from .metrics import EVENTS_SENT_BY_TYPE, observe_delivery

logger = logging.getLogger(__name__)


class Overflowed(Exception):
    """The subscriber fell behind its buffer; it must catch up from the log."""


class Closed(Exception):
    """The hub is shutting down; the client should reconnect (to any instance)."""


class Gone(ConnectionResetError):
    """The client's connection closed while the hub was writing to it."""


#: How a subscription ended: its terminal event was written.
COMPLETED = "completed"


class Subscription:
    """One SSE stream's place in the hub: a bounded buffer while it catches up, then a
    transport the hub writes to directly."""

    __slots__ = (
        "_buffer",
        "_ended",
        "capacity",
        "chunked",
        "job_id",
        "last_id",
        "last_sent",
        "outcome",
        "skip_until",
        "transport",
    )

    def __init__(self, job_id: str, capacity: int) -> None:
        self.job_id = job_id
        self.capacity = capacity
        self._buffer: deque[Frame] = deque()
        self._ended = asyncio.Event()
        #: ``None`` while catching up; the client's transport once live.
        self.transport: asyncio.Transport | None = None
        self.chunked = True
        #: The last event the hub wrote to the client (live phase).
        self.last_id: str | None = None
        #: Loop time of that write.
        self.last_sent = 0.0
        #: A client's own ID the hub's cursor has not reached yet: events up to it are skipped.
        self.skip_until: str | None = None
        #: ``COMPLETED``, or the exception the stream's task raises (Overflowed, Closed, Gone).
        self.outcome: str | Exception | None = None

    # -- catching up ------------------------------------------------------------------

    def push(self, event: Frame) -> bool:
        """Buffer an event while catching up; ``False`` (and cut loose) when full."""
        if len(self._buffer) >= self.capacity:
            self._buffer.clear()
            self.end(Overflowed())
            return False
        self._buffer.append(event)
        return True

    def pop(self) -> Frame | None:
        """The next buffered event, or ``None``; raises how the subscription ended, if it did."""
        if self._buffer:
            return self._buffer.popleft()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return None

    def go_live(
        self, transport: asyncio.Transport, *, chunked: bool, last_id: str | None, now: float
    ) -> None:
        """From now on the hub writes to ``transport``. Call with the buffer drained and no
        ``await`` since, so no event falls between the buffer and the live writes."""
        if self._buffer:
            raise RuntimeError("go_live with buffered events")
        self.transport = transport
        self.chunked = chunked
        self.last_id = last_id
        self.last_sent = now

    # -- ending -------------------------------------------------------------------------

    def end(self, outcome: str | Exception) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._ended.set()

    async def wait(self, timeout: float) -> str | None:
        """Until the subscription ends (``COMPLETED``; the others raise) or ``timeout``
        seconds pass (``None``)."""
        if self.outcome is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ended.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class Hub:
    def __init__(
        self,
        store: JobStore,
        reader: Redis,
        keys: Keys,
        *,
        block_ms: int = 5000,
        queue_size: int = 256,
        buffer_bytes: int = 256 * 1024,
    ) -> None:
        self.store = store
        self.reader = reader
        self._reads = StreamReader(reader)
        self.keys = keys
        self.block_ms = block_ms
        self.queue_size = queue_size
        self.buffer_bytes = buffer_bytes
        self.cursors: dict[str, str] = {}
        self.subscribers: dict[str, set[Subscription]] = {}
        self.closing = False
        self.stopping = False
        #: SSE streams this process serves (``JOBPROGRESS_MAX_STREAMS`` caps it).
        self.streams = 0
        # A private stream the reader also waits on: an XADD to it wakes the reader up
        # when a new job stream must be added to its XREAD (no admin commands needed).
        self.wake_key = keys.hub_wake(uuid.uuid4().hex)
        self._wake_cursor = "0-0"
        self._reading = False
        self._woken = False
        self._changed = asyncio.Event()

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self.subscribers.values())

    async def subscribe(self, job_id: str) -> tuple[Subscription, str]:
        """A new subscription and the cursor that separates log from live events.

        For a stream the hub does not follow yet, the cursor is the stream's last entry,
        looked up now: a reply the reader already has in flight can only hold entries up to
        that one or after it, so nothing falls between the log and the live events."""
        new_stream = False
        if job_id not in self.cursors:
            last = await self.store.last_event_id(job_id) or "0-0"
            if job_id not in self.cursors:
                self.cursors[job_id] = last
                self.subscribers[job_id] = set()
                new_stream = True
        subscription = Subscription(job_id, self.queue_size)
        self.subscribers[job_id].add(subscription)
        cursor = self.cursors[job_id]
        if new_stream:
            await self._wake()
        return subscription, cursor

    def go_live(
        self, subscription: Subscription, transport: asyncio.Transport, *, chunked: bool, last_id: str | None
    ) -> None:
        """The stream has written the log and its buffer: from now on the hub writes to
        ``transport`` (framed as HTTP/1.1 chunks when ``chunked``). Events up to ``last_id``
        that the reader has not dispatched yet are skipped for this client."""
        now = asyncio.get_running_loop().time()
        subscription.go_live(transport, chunked=chunked, last_id=last_id, now=now)
        cursor = self.cursors.get(subscription.job_id)
        if last_id is not None and cursor is not None and stream_id_after(last_id, cursor):
            subscription.skip_until = last_id

    def unsubscribe(self, subscription: Subscription) -> None:
        subs = self.subscribers.get(subscription.job_id)
        if subs is None:
            return
        subs.discard(subscription)
        if not subs:
            del self.subscribers[subscription.job_id]
            del self.cursors[subscription.job_id]

    def close_all(self) -> None:
        """Ask every stream of this process to end now (graceful shutdown)."""
        self.closing = True
        for subs in self.subscribers.values():
            for subscription in subs:
                subscription.end(Closed())

    async def _wake(self) -> None:
        self._changed.set()
        if not self._reading or self._woken:
            return
        self._woken = True
        try:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.expire(self.wake_key, 3600)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            logger.warning("could not wake the hub reader: %s", exc)

    def dispatch(self, job_id: str, events: list[Frame], now: float) -> None:
        """Hand ``events`` (new, in order, of one job) to its subscribers: written at once to
        the live ones (all of them in one write each), buffered for those catching up."""
        subs = self.subscribers.get(job_id)
        if not subs:
            return
        last = events[-1]
        if len(events) == 1:
            chunk, plain = last.chunk, last.sse
        else:
            chunk = b"".join(event.chunk for event in events)
            plain = b"".join(event.sse for event in events)
        ended: list[Subscription] = []
        written = 0
        for sub in subs:
            if sub.transport is None or sub.skip_until is not None:
                self._one_by_one(sub, events, now)
            elif self._write(sub, chunk, plain, last, now):
                written += 1
            if sub.outcome is not None:
                ended.append(sub)
        for sub in ended:
            subs.discard(sub)
        if written:
            for event in events:
                EVENTS_SENT_BY_TYPE[event.type].inc(written)
            observe_delivery(events)

    def _one_by_one(self, sub: Subscription, events: list[Frame], now: float) -> None:
        """The slow path of :meth:`dispatch`: buffer while catching up, or skip what the
        client already has."""
        for event in events:
            if sub.outcome is not None:
                return
            if sub.transport is None:
                sub.push(event)
                continue
            if sub.skip_until is not None:
                if not stream_id_after(event.id, sub.skip_until):
                    continue
                sub.skip_until = None
            if self._write(sub, event.chunk, event.sse, event, now):
                EVENTS_SENT_BY_TYPE[event.type].inc()

    def _write(self, sub: Subscription, chunk: bytes, plain: bytes, last: Frame, now: float) -> bool:
        """Write to a live subscriber, or end it when its client is gone or too far behind."""
        transport = sub.transport
        assert transport is not None
        if transport.is_closing():
            sub.end(Gone())
            return False
        if transport.get_write_buffer_size() > self.buffer_bytes:
            sub.end(Overflowed())
            return False
        transport.write(chunk if sub.chunked else plain)
        sub.last_id = last.id
        sub.last_sent = now
        if last.type.terminal:
            sub.end(COMPLETED)
        return True

    async def run(self) -> None:
        """The reader loop; one per process."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(first=0.1, cap=5.0)
        while not self.stopping:
            if not self.cursors:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {self.keys.events(job): cursor for job, cursor in self.cursors.items()}
            streams[self.wake_key] = self._wake_cursor
            self._changed.clear()
            self._woken = False
            self._reading = True
            try:
                reply = await self._reads.xread(streams, block_ms=self.block_ms, count=500)
                backoff.reset()
            except REDIS_ERRORS as exc:
                if self.stopping:
                    return
                logger.warning("hub read failed (%s); retrying in %.1fs", exc, backoff.delay)
                await backoff.sleep()
                continue
            finally:
                self._reading = False
            now = loop.time()
            for stream, entries in reply:
                if stream == self.wake_key:
                    self._wake_cursor = entries[-1][0]
                    continue
                job_id = self.keys.job_id_of_events(stream)
                cursor = self.cursors.get(job_id)
                if cursor is None:
                    continue
                events = [
                    Frame.from_entry(entry_id, fields)
                    for entry_id, fields in entries
                    if stream_id_after(entry_id, cursor)
                ]
                if events:
                    self.cursors[job_id] = events[-1].id
                    self.dispatch(job_id, events, now)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """End every stream and the reader loop ``task``."""
        self.close_all()
        self.stopping = True
        self._changed.set()
        await stop_reader(task, self.reader)
        with contextlib.suppress(*REDIS_ERRORS):
            await self.store.redis.delete(self.wake_key)
