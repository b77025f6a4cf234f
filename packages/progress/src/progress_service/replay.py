"""A job's log as its streams read it: entries passed on as frames, undecoded.

On Redis Cluster the log is read on replicas (:class:`Log` given a client that reads them:
``create_redis(..., replicas=True)``), as the hub's readers read live events: a client is
sent only events that replication has carried, which a failover cannot take back. A read is
bounded by the hub's cursor, an entry some node already had; a replica that has not reached
it yet (another replica of the master, a little behind) leaves the rest to the master, so
the seam between log and live events stays exact.

The reads that every new stream makes (its job, its first page of the log) go through an
:class:`~jobprogress_core.autopipeline.AutoPipeline`: in a connect storm, those of all the
streams opening in the same turn of the event loop share one round trip.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from jobprogress_core.autopipeline import AutoPipeline
from jobprogress_core.model import Job
from jobprogress_core.redis import Entry, range_entries
from jobprogress_core.store import JobStore

from .frames import Frame

__all__ = ["REPLAY_PAGE", "Log"]

#: Entries read from the log in one ``XRANGE``.
REPLAY_PAGE = 500


class Log:
    """The reads of a job's log a stream makes: on ``replicas`` when given, else on the
    store's own client (one Redis, whose every read is the master's)."""

    def __init__(self, store: JobStore, replicas: Redis | None = None) -> None:
        self.store = store
        #: The store's reads on ``replicas`` (it writes nothing).
        self.reads = store if replicas is None else JobStore(replicas, store.keys)
        #: The batched reads: the job's hash on the master, the log where it is read.
        self._jobs = AutoPipeline(store.redis)
        self._entries = self._jobs if replicas is None else AutoPipeline(replicas)

    async def last_event_id(self, job_id: str) -> str | None:
        return await self.reads.last_event_id(job_id)

    async def job(self, job_id: str, *, first_event: bool = False) -> tuple[Job | None, str | None]:
        """The job (``None`` if it does not exist) and, with ``first_event``, the ID of its
        oldest retained event (else ``None``): in one round trip, on the master."""
        keys = self.store.keys

        def fill(pipe: Any) -> None:
            pipe.hgetall(keys.job(job_id))
            if first_event:
                pipe.xrange(keys.events(job_id), "-", "+", count=1)

        fields, *first = await self._jobs.call(fill)
        job = Job.from_hash(fields) if fields else None
        entries = range_entries(first[0]) if first else []
        return job, entries[0][0] if entries else None

    async def _read(self, job_id: str, after: str | None, *, until: str, count: int) -> list[Entry]:
        """:meth:`JobStore.entries` of the log's reads, batched with other streams' reads."""
        key, start = self.store.keys.events(job_id), f"({after}" if after else "-"
        (reply,) = await self._entries.call(lambda pipe: pipe.xrange(key, start, until, count=count))
        return range_entries(reply)

    async def frames(self, job_id: str, after: str | None, *, until: str, count: int) -> list[Frame]:
        """Up to ``count`` events of the job strictly after ``after`` (from the start if
        ``None``) up to ``until`` inclusive, an entry of the log (or ``0-0``)."""
        entries = await self._read(job_id, after, until=until, count=count)
        reached = entries[-1][0] if entries else after
        if self.reads is not self.store and len(entries) < count and until not in ("0-0", reached):
            # This replica is behind the cursor: the rest from the master, which has it all.
            entries += await self.store.entries(job_id, reached, until=until, count=count - len(entries))
        return [Frame.from_entry(entry_id, fields) for entry_id, fields in entries]
