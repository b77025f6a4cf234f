"""The job queue: the stream of jobs waiting for a worker and its consumer group, and every
command on them.

job-queue-service adds one entry per submitted job (:meth:`JobQueue.enqueue`). Workers are
consumers of the group: each reads new entries (:meth:`~JobQueue.read`), keeps the entries
of its running jobs fresh (:meth:`~JobQueue.refresh`), takes over entries idle past the
visibility timeout (:meth:`~JobQueue.reclaim`) and acknowledges an entry once its job has
ended (:meth:`~JobQueue.ack`). Delivery is at-least-once: an entry whose worker died is
delivered again. The job's own state (status, attempts, which entry's run holds it) is in
its hash, written by :class:`jobprogress_core.store.JobStore`.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .keys import QUEUE_GROUP, Keys
from .model import Job
from .redis import Entry, claimed_entries, range_entries, stream_entries

__all__ = ["CLAIM_SCAN_CALLS", "DEAD_CONSUMER_IDLE_MS", "JobQueue"]

#: XAUTOCLAIM calls one look for a stale entry may take (each scans about ten entries).
CLAIM_SCAN_CALLS = 50
#: Consumers idle this long with nothing pending belong to workers that are gone.
DEAD_CONSUMER_IDLE_MS = 3_600_000


class JobQueue:
    """The queue stream (``keys.queue``) and its consumer group (:data:`QUEUE_GROUP`).

    ``reader`` is the client of the blocking ``XREADGROUP`` (one of its own: the read holds
    its connection for the whole wait); ``redis`` by default. An entry idle for
    ``visibility_timeout`` seconds belongs to a worker that stopped responding.
    """

    def __init__(
        self, redis: Redis, keys: Keys, *, visibility_timeout: float = 30.0, reader: Redis | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.reader = reader or redis
        self.visibility_ms = int(visibility_timeout * 1000)
        #: Where the last ``XAUTOCLAIM`` scan of the group's pending entries stopped.
        self.cursor = "0-0"

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self.redis.xgroup_create(self.keys.queue, QUEUE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, job_id: str) -> str:
        """Hand a stored job to the workers; the new entry's ID."""
        return str(await self.redis.xadd(self.keys.queue, {"jobId": job_id}))

    async def read(self, consumer: str, *, block_ms: int, count: int = 1) -> list[Entry]:
        """Entries no consumer has been given yet, now ``consumer``'s, waiting up to
        ``block_ms`` for one (on the reader)."""
        reply = await self.reader.xreadgroup(
            QUEUE_GROUP, consumer, {self.keys.queue: ">"}, count=count, block=block_ms
        )
        return [entry for _, entries in stream_entries(reply) for entry in entries]

    async def ack(self, entry_id: str) -> None:
        """Done with an entry: acknowledge it and drop it, so the queue stays short."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.queue, QUEUE_GROUP, entry_id)
            pipe.xdel(self.keys.queue, entry_id)
            await pipe.execute()

    async def reclaim(self, consumer: str) -> list[Entry]:
        """At most one entry idle past the visibility timeout, now ``consumer``'s.

        Each ``XAUTOCLAIM`` looks at a few pending entries only; the cursor is kept between
        calls and followed, so a stale entry behind many fresh ones is still found."""
        for _ in range(CLAIM_SCAN_CALLS):
            reply = await self.redis.xautoclaim(
                self.keys.queue, QUEUE_GROUP, consumer, self.visibility_ms, self.cursor, count=1
            )
            self.cursor = str(reply[0]) if reply else "0-0"
            entries = claimed_entries(reply)
            if entries or self.cursor == "0-0":
                return entries
        return []

    async def refresh(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of entries ``consumer`` holds (``XCLAIM … JUSTID``)."""
        if entry_ids:
            ids: list[int | bytes | str | memoryview] = list(entry_ids)
            await self.redis.xclaim(self.keys.queue, QUEUE_GROUP, consumer, 0, ids, justid=True)

    async def held_elsewhere(self, job: Job, entry_id: str) -> bool:
        """Whether another entry of this job is held by a live run (its claim is fresh):
        then ``entry_id`` is a duplicate (a retried XADD, an interrupted hand-back)."""
        if not job.entry or job.entry == entry_id:
            return False
        pending = await self.redis.xpending_range(
            self.keys.queue, QUEUE_GROUP, min=job.entry, max=job.entry, count=1
        )
        return bool(pending) and int(pending[0]["time_since_delivered"]) < self.visibility_ms

    async def held_by(self, consumer: str) -> list[tuple[str, str]]:
        """(entry id, job id) of every entry pending for ``consumer``."""
        pending = await self.redis.xpending_range(
            self.keys.queue, QUEUE_GROUP, min="-", max="+", count=1000, consumername=consumer
        )
        held = []
        for item in pending:
            entry_id = str(item["message_id"])
            entries = range_entries(await self.redis.xrange(self.keys.queue, entry_id, entry_id))
            held.append((entry_id, entries[0][1].get("jobId", "") if entries else ""))
        return held

    async def forget_dead_consumers(self, consumer: str) -> int:
        """Delete the consumers besides ``consumer`` idle for an hour with nothing pending
        (every worker process has a consumer name of its own, so the group would otherwise
        only grow); how many."""
        consumers = await self.redis.xinfo_consumers(self.keys.queue, QUEUE_GROUP)
        dead = [
            c["name"] for c in consumers
            if c["name"] != consumer and int(c["pending"]) == 0 and int(c["idle"]) > DEAD_CONSUMER_IDLE_MS
        ]  # fmt: skip
        for name in dead:
            await self.redis.xgroup_delconsumer(self.keys.queue, QUEUE_GROUP, name)
        return len(dead)

    async def leave(self, consumer: str) -> None:
        """Remove ``consumer`` from the group, unless it still holds entries."""
        consumers = await self.redis.xinfo_consumers(self.keys.queue, QUEUE_GROUP)
        mine = next((c for c in consumers if c["name"] == consumer), None)
        if mine is not None and int(mine["pending"]) == 0:
            await self.redis.xgroup_delconsumer(self.keys.queue, QUEUE_GROUP, consumer)

    async def counts(self) -> tuple[int, int]:
        """Jobs waiting for a worker and jobs a worker holds (delivered, not yet acknowledged),
        read in one transaction. Acknowledged entries are deleted (:meth:`ack`), so what the
        queue holds besides the pending ones is waiting."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xlen(self.keys.queue)
                pipe.xpending(self.keys.queue, QUEUE_GROUP)
                length, pending = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                raise
            return int(await self.redis.xlen(self.keys.queue)), 0  # no worker has started yet
        held = int(pending["pending"])
        return max(int(length) - held, 0), held
