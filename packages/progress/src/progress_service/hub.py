"""Fan-out hub: one Redis reader per process, dispatching events to local subscribers.

The reader issues one ``XREAD BLOCK`` over the event streams of every job that has a
subscriber, so the Redis connections of a process stay constant whatever the number of
clients. Each event is decoded and encoded once, then handed to every subscriber of its
job. A subscriber's buffer is bounded: one that falls behind is cut loose (``overflowed``)
and catches up from the log by its own last ID, so nobody else waits for it.

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
from typing import Any

from redis.asyncio import Redis

from jobprogress_core.keys import Keys
from jobprogress_core.model import Event, stream_id_after
from jobprogress_core.redis import REDIS_ERRORS, stop_reader, stream_entries
from jobprogress_core.store import JobStore

logger = logging.getLogger(__name__)


class Overflowed(Exception):
    """The subscriber fell behind its buffer; it must catch up from the log."""


class Closed(Exception):
    """The hub is shutting down; the client should reconnect (to any instance)."""


class Subscription:
    __slots__ = ("_events", "_ready", "capacity", "closed", "job_id", "overflowed")

    def __init__(self, job_id: str, capacity: int) -> None:
        self.job_id = job_id
        self.capacity = capacity
        self.overflowed = False
        self.closed = False
        self._events: deque[Event] = deque()
        self._ready = asyncio.Event()

    def push(self, event: Event) -> bool:
        """Buffer an event; ``False`` (and the buffer dropped) when it is full."""
        if len(self._events) >= self.capacity:
            self.overflowed = True
            self._events.clear()
            self._ready.set()
            return False
        self._events.append(event)
        self._ready.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def get(self, timeout: float) -> Event | None:
        """The next event, or ``None`` after ``timeout`` seconds without one."""
        while True:
            if self.closed:
                raise Closed
            if self._events:
                return self._events.popleft()
            if self.overflowed:
                raise Overflowed
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None


class Hub:
    def __init__(
        self, store: JobStore, reader: Redis, keys: Keys, *, block_ms: int = 5000, queue_size: int = 256
    ) -> None:
        self.store = store
        self.reader = reader
        self.keys = keys
        self.block_ms = block_ms
        self.queue_size = queue_size
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
                subscription.close()

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

    def dispatch(self, job_id: str, event: Event) -> None:
        subs = self.subscribers.get(job_id)
        if not subs:
            return
        for subscription in list(subs):
            if not subscription.push(event):
                subs.discard(subscription)

    async def run(self) -> None:
        """The reader loop; one per process."""
        backoff = 0.1
        while not self.stopping:
            if not self.cursors:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams: dict[Any, Any] = {self.keys.events(job): cursor for job, cursor in self.cursors.items()}
            streams[self.wake_key] = self._wake_cursor
            self._changed.clear()
            self._woken = False
            self._reading = True
            try:
                reply = await self.reader.xread(streams, block=self.block_ms, count=500)
                backoff = 0.1
            except REDIS_ERRORS as exc:
                if self.stopping:
                    return
                logger.warning("hub read failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            finally:
                self._reading = False
            for stream, entries in stream_entries(reply):
                if stream == self.wake_key:
                    self._wake_cursor = entries[-1][0]
                    continue
                job_id = self.keys.job_id_of_events(stream)
                for entry_id, fields in entries:
                    cursor = self.cursors.get(job_id)
                    if cursor is None or not stream_id_after(entry_id, cursor):
                        continue
                    self.cursors[job_id] = entry_id
                    self.dispatch(job_id, Event.from_entry(entry_id, fields))

    async def stop(self, task: asyncio.Task[None]) -> None:
        """End every stream and the reader loop ``task``."""
        self.close_all()
        self.stopping = True
        self._changed.set()
        await stop_reader(task, self.reader)
        with contextlib.suppress(*REDIS_ERRORS):
            await self.store.redis.delete(self.wake_key)
