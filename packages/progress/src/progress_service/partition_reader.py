"""The hub's reader of one partition: one blocking ``XREAD`` over the event streams of the
partition's jobs that have viewers on this process, plus the process's wake stream for the
partition.

Redis Cluster refuses an ``XREAD`` whose keys lie in different slots, and every key of a
partition carries its hash tag (:mod:`jobprogress_core.keys`): so the hub reads each
partition on its own, on one connection held for the purpose. A reader starts when its
partition's first job gets a viewer and ends when it finds, after a read, that none is left
(at most one block time after the last viewer went), closing its connection; so a process
holds at most one reader connection per partition that has viewers, whatever its number of
clients.

Each read passes the hub's cursor of every job (never ``$``), so a read issued again, after
an error, a redirection or a wake-up, neither skips nor repeats an event.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from jobprogress_client.backoff import Backoff
from jobprogress_core.model import stream_id_after
from jobprogress_core.readers import READ_ERRORS, BlockingReader
from jobprogress_core.redis import REDIS_ERRORS, Entry

from .frames import Frame
from .metrics import READER_CONNECTIONS

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["PartitionReader", "WakeStream"]

logger = logging.getLogger(__name__)

#: Entries one read returns at most, over all its streams.
READ_COUNT = 500
#: What a read may raise and the reader rides out (by backing off): Redis unavailable, and any
#: other error of Redis (logged as such).
RETRIED: tuple[type[Exception], ...] = (*READ_ERRORS, RedisError)
#: How long a wake stream lives after its last write (it is deleted on a clean stop).
WAKE_TTL_SECONDS = 3600


@dataclass
class WakeStream:
    """A process's private stream for one partition: an entry appended to it wakes the
    partition's reader, so that its next ``XREAD`` includes a stream it just started
    following (no admin command needed). It outlives the readers of its partition, so a
    reader that starts again resumes after the last wake-up seen."""

    key: str
    cursor: str = "0-0"


class PartitionReader:
    """Reads one partition's streams for ``hub`` and hands their events to its dispatch."""

    def __init__(self, hub: Hub, partition: int, reads: BlockingReader, wake: WakeStream) -> None:
        self.hub = hub
        self.partition = partition
        self.reads = reads
        self.wake_stream = wake
        #: The partition's topics (jobs, feeds) with viewers, and their stream keys.
        self.jobs: dict[str, str] = {}
        #: The other way round: each stream key's topic.
        self._topics: dict[str, str] = {}
        self._reading = False
        self._woken = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Run the reader in a task of its own, in a fresh context: it serves every stream of
        the partition, so its log lines carry no request's or job's id."""
        self.task = asyncio.create_task(
            self.run(), name=f"hub-reader-{self.partition}", context=contextvars.Context()
        )
        return self.task

    def follow(self, job_id: str) -> None:
        key = self.jobs[job_id] = self.hub.keys.events(job_id)
        self._topics[key] = job_id

    def unfollow(self, job_id: str) -> None:
        key = self.jobs.pop(job_id, None)
        if key is not None:
            del self._topics[key]

    async def wake(self) -> None:
        """Make a read in flight return now, so that the next one includes a new stream.
        One wake-up per read is enough; with no read in flight, none is needed."""
        if not self._reading or self._woken:
            return
        self._woken = True
        key = self.wake_stream.key
        try:
            async with self.hub.store.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.expire(key, WAKE_TTL_SECONDS)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            logger.warning("could not wake the reader of partition %d: %s", self.partition, exc)

    async def interrupt(self) -> None:
        """Fail a read in flight at once (the hub is stopping)."""
        await self.reads.interrupt()

    async def run(self) -> None:
        """Read until the partition has no viewer left or the hub stops; then give the
        connection back. An unexpected error ends the partition's streams (their clients
        resume by their last ID) rather than leaving them without live events."""
        READER_CONNECTIONS.inc()
        try:
            await self._read_while_followed()
        except Exception:
            logger.exception("the reader of partition %d failed; ending its streams", self.partition)
            self.hub.reader_failed(self)
        finally:
            self.hub.reader_ended(self)
            try:
                await self.reads.close()
            finally:
                READER_CONNECTIONS.dec()

    async def _read_while_followed(self) -> None:
        backoff = Backoff(first=0.05, cap=2.0)
        failures = 0
        while self.jobs and not self.hub.stopping:
            try:
                reply = await self._read()
            except RETRIED as exc:
                if self.hub.stopping:
                    return
                failures += 1
                self._log_failure(exc, failures, backoff.delay)
                await backoff.sleep()
                continue
            if failures:
                logger.info("reader of partition %d: reading again (%d failures)", self.partition, failures)
                failures = 0
                backoff.reset()
            self._deliver(reply, asyncio.get_running_loop().time())

    def _log_failure(self, exc: Exception, failures: int, delay: float) -> None:
        """Redis unavailable: said once per outage (every reader of its shard sees it), the
        retries after that at debug level. Any other error of Redis is said each time."""
        if not isinstance(exc, READ_ERRORS):
            logger.error("reader of partition %d: %r; retrying in %.2fs", self.partition, exc, delay)
        elif failures == 1:
            logger.warning("reader of partition %d: redis unavailable (%s); retrying", self.partition, exc)
        else:
            logger.debug("reader of partition %d: still unavailable (%s)", self.partition, exc)

    async def _read(self) -> list[tuple[str, list[Entry]]]:
        cursors = self.hub.cursors
        streams = {key: cursors[job_id] for job_id, key in self.jobs.items()}
        streams[self.wake_stream.key] = self.wake_stream.cursor
        self._woken = False
        self._reading = True
        try:
            return await self.reads.xread(streams, block_ms=self.hub.block_ms, count=READ_COUNT)
        finally:
            self._reading = False

    def _deliver(self, reply: list[tuple[str, list[Entry]]], now: float) -> None:
        """Hand each stream's new entries to the hub; those up to a job's cursor (a read
        issued before the job was followed anew, say) are not new."""
        hub = self.hub
        for stream, entries in reply:
            if stream == self.wake_stream.key:
                self.wake_stream.cursor = entries[-1][0]
                continue
            job_id = self._topics.get(stream)
            cursor = None if job_id is None else hub.cursors.get(job_id)
            if job_id is None or cursor is None:
                continue
            events = [
                Frame.from_entry(entry_id, fields)
                for entry_id, fields in entries
                if stream_id_after(entry_id, cursor)
            ]
            if events:
                hub.cursors[job_id] = events[-1].id
                hub.dispatch(job_id, events, now)
