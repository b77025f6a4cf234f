"""Fan-out hub: one Redis reader per partition with viewers, dispatching events to local
viewers.

Jobs are spread over partitions (``JOBPROGRESS_PARTITIONS``), each with a hash tag of its
own. For every partition that has viewers on this process, a :class:`PartitionReader` issues
one ``XREAD BLOCK`` over the event streams of that partition's jobs: the only kind of
multi-stream read Redis Cluster accepts, and on one Redis just as good. A process therefore
holds at most one reader connection per partition, plus its pool, whatever the number of
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

from jobprogress_core.keys import Keys
from jobprogress_core.model import stream_id_after
from jobprogress_core.readers import blocking_reader
from jobprogress_core.redis import REDIS_ERRORS, close
from jobprogress_core.store import JobStore
from jobprogress_core.tasks import cancel_and_wait

from .frames import Frame
from .metrics import observe_delivery
from .partition_reader import PartitionReader, WakeStream
from .replay import Log
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
        replicas: Redis | None = None,
    ) -> None:
        self.store = store
        #: Where streams read the log, and the hub its cursors: on ``replicas`` when given
        #: (a cluster's), so that both agree with readers that read replicas (:mod:`.replay`).
        self.log = Log(store, replicas)
        #: The readers' own client (one Redis or a cluster): each partition reader holds one
        #: of its connections, so its pool (per node, on a cluster) needs one per partition.
        self.reader = reader
        self.keys = keys
        self.block_ms = block_ms
        self.queue_size = queue_size
        self.buffer_bytes = buffer_bytes
        self.cursors: dict[str, str] = {}
        self.subscribers: dict[str, set[Viewer]] = {}
        #: The reader of each partition that has viewers (at most ``keys.partitions``).
        self.readers: dict[int, PartitionReader] = {}
        self.closing = False
        self.stopping = False
        #: SSE streams this process serves (``JOBPROGRESS_MAX_STREAMS`` caps it).
        self.streams = 0
        self._token = uuid.uuid4().hex
        self._wakes: dict[int, WakeStream] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self.subscribers.values())

    async def subscribe(self, viewer: Viewer) -> str:
        """Add ``viewer`` to its job's viewers, catching up; returns the cursor that separates
        log from live events.

        For a stream the hub does not follow yet, the cursor is the stream's last entry,
        looked up now: a reply its partition's reader already has in flight can only hold
        entries up to that one or after it, so nothing falls between the log and the live
        events. The reader then follows the stream from its next read on, woken up now."""
        job_id = viewer.job_id
        reader = None
        if job_id not in self.cursors:
            last = await self.log.last_event_id(job_id) or "0-0"
            if job_id not in self.cursors:
                self.cursors[job_id] = last
                self.subscribers[job_id] = set()
                reader = self._reader_of(job_id)
                reader.follow(job_id)
        viewer.subscribed()
        self.subscribers[job_id].add(viewer)
        if self.closing:  # close_all ran during the lookup above: this viewer ends too
            viewer.end(Ending.SHUTDOWN)
        cursor = self.cursors[job_id]
        if reader is not None:
            await reader.wake()
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
            self._forget(viewer.job_id)

    def _forget(self, job_id: str) -> None:
        """Stop following a job (its partition's reader ends once it follows none)."""
        del self.subscribers[job_id]
        del self.cursors[job_id]
        reader = self.readers.get(self.keys.partition_of(job_id))
        if reader is not None:
            reader.unfollow(job_id)

    def close_all(self) -> None:
        """Ask every stream of this process to end now (graceful shutdown)."""
        self.closing = True
        for viewers in self.subscribers.values():
            for viewer in viewers:
                viewer.end(Ending.SHUTDOWN)

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
        live = False  # written to a client live, one by one
        for viewer in viewers:
            if viewer.transport is None or viewer.skip_until is not None or viewer.per_event:
                live = self._one_by_one(viewer, events, now) or live
            elif viewer.write_live(chunk, plain, last, now, limit=self.buffer_bytes):
                written += 1
            if viewer.ending is not None:
                ended.append(viewer)
        for viewer in ended:
            viewers.discard(viewer)
        if written:
            Viewer.count_sent((event.type for event in events), viewers=written)
        if written or live:
            observe_delivery(events)

    def _one_by_one(self, viewer: Viewer, events: list[Frame], now: float) -> bool:
        """The slow path of :meth:`dispatch`: buffer while catching up, skip what the client
        already has, or write to a stream of many jobs (each event with an ID of its own).
        Whether it wrote any event to the client."""
        wrote = False
        for event in events:
            if viewer.ending is not None:
                break
            if viewer.transport is None:
                viewer.push(event, self.queue_size)
                continue
            if viewer.skip_until is not None:
                if not stream_id_after(event.id, viewer.skip_until):
                    continue
                viewer.skip_until = None
            if viewer.write_live(event.chunk, event.sse, event, now, limit=self.buffer_bytes):
                Viewer.count_sent((event.type,))
                wrote = True
        return wrote

    # -- the partition readers ------------------------------------------------------------

    @property
    def reader_connections(self) -> int:
        """Connections the partition readers hold now (one each; a reader that has ended
        gives its own back before it leaves this count)."""
        return sum(1 for task in self._tasks if not task.done())

    @property
    def wake_keys(self) -> list[str]:
        """The keys of this process's wake streams (one per partition it has read)."""
        return [wake.key for wake in self._wakes.values()]

    def _reader_of(self, job_id: str) -> PartitionReader:
        """The reader of the job's partition, started if the partition had none."""
        partition = self.keys.partition_of(job_id)
        reader = self.readers.get(partition)
        if reader is None:
            wake = self._wakes.get(partition)
            if wake is None:
                wake = self._wakes[partition] = WakeStream(self.keys.hub_wake(partition, self._token))
            reader = self.readers[partition] = PartitionReader(
                self, partition, blocking_reader(self.reader), wake
            )
            task = reader.start()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return reader

    def reader_ended(self, reader: PartitionReader) -> None:
        """``reader`` reads no more: the partition's next viewer starts a new one. Called
        by the reader with no ``await`` since it found it follows no job."""
        if self.readers.get(reader.partition) is reader:
            del self.readers[reader.partition]

    def reader_failed(self, reader: PartitionReader) -> None:
        """``reader`` stopped on an unexpected error: its jobs' viewers are let go (their
        streams end, and their clients resume by their last ID), and the jobs forgotten."""
        for job_id in list(reader.jobs):
            for viewer in self.subscribers.get(job_id, ()):
                viewer.end(Ending.ERROR)
            if job_id in self.cursors:
                self._forget(job_id)

    async def stop(self, *, timeout: float = 5.0) -> None:
        """End every stream and every reader; delete this process's wake streams.

        Cancelling a task blocked in a read can be swallowed by redis-py, so the readers
        are told to stop, and their connections closed under them: their reads fail at once
        and they see that they must stop. Cancellation remains only as a last resort."""
        self.close_all()
        self.stopping = True
        await asyncio.gather(*(reader.interrupt() for reader in self.readers.values()))
        tasks = set(self._tasks)
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=timeout)
            if running:
                logger.warning("%d hub readers did not stop in %.1fs; cancelling them", len(running), timeout)
                await cancel_and_wait(*running)
        await close(self.reader)
        await self._delete_wake_streams()

    async def _delete_wake_streams(self) -> None:
        if not self._wakes:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for wake in self._wakes.values():
                    pipe.delete(wake.key)  # one key per command: each partition is its own slot
                await pipe.execute()
