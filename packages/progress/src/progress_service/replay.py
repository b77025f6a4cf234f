"""A job's log as its streams read it: entries passed on as frames, undecoded.

On Redis Cluster the log is read on replicas (:class:`Log` given a client that reads them:
``create_redis(..., replicas=True)``), as the hub's readers read live events: a client is
sent only events that replication has carried, which a failover cannot take back. A read is
bounded by the hub's cursor, an entry some node already had; a replica that has not reached
it yet (another replica of the master, a little behind) leaves the rest to the master, so
the seam between log and live events stays exact.
"""

from __future__ import annotations

from redis.asyncio import Redis

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

    async def last_event_id(self, job_id: str) -> str | None:
        return await self.reads.last_event_id(job_id)

    async def frames(self, job_id: str, after: str | None, *, until: str, count: int) -> list[Frame]:
        """Up to ``count`` events of the job strictly after ``after`` (from the start if
        ``None``) up to ``until`` inclusive, an entry of the log (or ``0-0``)."""
        entries = await self.reads.entries(job_id, after, until=until, count=count)
        reached = entries[-1][0] if entries else after
        if self.reads is not self.store and len(entries) < count and until not in ("0-0", reached):
            # This replica is behind the cursor: the rest from the master, which has it all.
            entries += await self.store.entries(job_id, reached, until=until, count=count - len(entries))
        return [Frame.from_entry(entry_id, fields) for entry_id, fields in entries]
