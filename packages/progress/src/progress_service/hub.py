"""Fan-out hub: one Redis reader per process, dispatching events to local viewers.

The reader issues one ``XREAD BLOCK`` over the event streams of every job that has a
viewer, so the Redis connections of a process stay constant whatever the number of
clients. Each event is framed once (its data as the worker wrote it, never decoded), then
handed to every viewer of its job.

A viewer's stay in the hub has two phases. While its stream catches up from the log, live
events are buffered for it (bounded: past ``queue_size`` it is let go). Once it has written
the log and that buffer, it goes *live*: the hub then writes each event's bytes straight to
the client's transport, with no task switch and no copy per viewer. A live client whose
unsent bytes pass ``buffer_bytes`` is let go too. A viewer let go that way
(:attr:`Ending.OVERFLOW`) catches up from the log by its own last ID, so nobody else waits
for it and nothing is lost. How a stay ended is recorded on the viewer, whose stream's task
wakes up and reads it.

Seam: :meth:`Hub.subscribe` returns the hub's cursor for the job. Everything up to the
cursor is in the log (read it with XRANGE); everything after it arrives through the hub.
Subscribing and dispatching run on one event loop, so nothing falls between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from redis.asyncio import Redis

from jobprogress_client.backoff import Backoff
from jobprogress_core.keys import Keys
from jobprogress_core.model import stream_id_after
from jobprogress_core.redis import REDIS_ERRORS, StreamReader, stop_reader
from jobprogress_core.store import JobStore

from .frames import Frame
from .metrics import observe_delivery
from .viewer import Ending, Viewer

__all__ = ["Hub"]

logger = logging.getLogger(__name__)


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
        self.subscribers: dict[str, set[Viewer]] = {}
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

    async def subscribe(self, viewer: Viewer) -> str:
        """Add ``viewer`` to its job's viewers, catching up; returns the cursor that separates
        log from live events.

        For a stream the hub does not follow yet, the cursor is the stream's last entry,
        looked up now: a reply the reader already has in flight can only hold entries up to
        that one or after it, so nothing falls between the log and the live events."""
        job_id = viewer.job_id
        new_stream = False
        if job_id not in self.cursors:
            last = await self.store.last_event_id(job_id) or "0-0"
            if job_id not in self.cursors:
                self.cursors[job_id] = last
                self.subscribers[job_id] = set()
                new_stream = True
        viewer.subscribed()
        self.subscribers[job_id].add(viewer)
        cursor = self.cursors[job_id]
        if new_stream:
            await self._wake()
        return cursor

    def go_live(self, viewer: Viewer, transport: asyncio.Transport, *, chunked: bool) -> None:
        """The stream has written the log and its buffer: from now on the hub writes to
        ``transport`` (framed as HTTP/1.1 chunks when ``chunked``). Events up to the viewer's
        last ID that the reader has not dispatched yet are skipped for this client."""
        viewer.go_live(transport, chunked=chunked, now=asyncio.get_running_loop().time())
        cursor = self.cursors.get(viewer.job_id)
        last_id = viewer.last_id
        if last_id is not None and cursor is not None and stream_id_after(last_id, cursor):
            viewer.skip_until = last_id

    def unsubscribe(self, viewer: Viewer) -> None:
        viewers = self.subscribers.get(viewer.job_id)
        if viewers is None:
            return
        viewers.discard(viewer)
        if not viewers:
            del self.subscribers[viewer.job_id]
            del self.cursors[viewer.job_id]

    def close_all(self) -> None:
        """Ask every stream of this process to end now (graceful shutdown)."""
        self.closing = True
        for viewers in self.subscribers.values():
            for viewer in viewers:
                viewer.end(Ending.SHUTDOWN)

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
        """Hand ``events`` (new, in order, of one job) to its viewers: written at once to
        the live ones (all of them in one write each), buffered for those catching up."""
        viewers = self.subscribers.get(job_id)
        if not viewers:
            return
        last = events[-1]
        if len(events) == 1:
            chunk, plain = last.chunk, last.sse
        else:
            chunk = b"".join(event.chunk for event in events)
            plain = b"".join(event.sse for event in events)
        ended: list[Viewer] = []
        written = 0
        for viewer in viewers:
            if viewer.transport is None or viewer.skip_until is not None:
                self._one_by_one(viewer, events, now)
            elif viewer.write_live(chunk, plain, last, now, limit=self.buffer_bytes):
                written += 1
            if viewer.ending is not None:
                ended.append(viewer)
        for viewer in ended:
            viewers.discard(viewer)
        if written:
            Viewer.count_sent((event.type for event in events), viewers=written)
            observe_delivery(events)

    def _one_by_one(self, viewer: Viewer, events: list[Frame], now: float) -> None:
        """The slow path of :meth:`dispatch`: buffer while catching up, or skip what the
        client already has."""
        for event in events:
            if viewer.ending is not None:
                return
            if viewer.transport is None:
                viewer.push(event, self.queue_size)
                continue
            if viewer.skip_until is not None:
                if not stream_id_after(event.id, viewer.skip_until):
                    continue
                viewer.skip_until = None
            if viewer.write_live(event.chunk, event.sse, event, now, limit=self.buffer_bytes):
                Viewer.count_sent((event.type,))

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
