"""The job queue: one stream per partition (a *shard*, :mod:`.queue_shards`), and the
commands on its entries.

Why shards: on Redis Cluster a command may only name keys of one slot, and a job's keys
live in its partition's slot (:mod:`.keys`). The queue is cut the same way: a job is queued
in its own partition's shard (:meth:`.Keys.queue_of`), and every command names one shard
(``XREADGROUP``, ``XAUTOCLAIM``, ``XCLAIM``, the ``MULTI`` of an acknowledgement). An entry
is a :class:`.QueueEntry`, its shard with its id. A job's entries are all in its own shard,
so the job's hash names the entry that holds it (``entry``) by its id alone.

job-queue-service adds one entry per submitted job (:meth:`JobQueue.enqueue`); every worker
is a consumer of every shard's group (``worker_service.intake`` says how it reads them).
Delivery is at-least-once: an entry whose worker died is delivered again. The job's own
state (status, attempts, which entry's run holds it) is in its hash
(:class:`jobprogress_core.store.JobStore`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from .keys import QUEUE_GROUP, Keys
from .model import Job
from .queue_shards import QueueEntry, QueueShards
from .redis import claimed_entries, stream_entries

__all__ = ["CLAIM_SCAN_CALLS", "JobQueue", "QueueEntry"]

#: XAUTOCLAIM calls one look for stale entries may make, over all shards (each call looks
#: at about ten pending entries of one shard; the next look goes on where this one stopped).
CLAIM_SCAN_CALLS = 50


class JobQueue(QueueShards):
    """The queue's entries, on every shard.

    ``reader`` is the client of the blocking reads (:meth:`wait`; one of its own: a read
    holds its connection for the whole wait); ``redis`` by default. An entry idle for
    ``visibility_timeout`` seconds belongs to a worker that stopped responding.
    """

    def __init__(
        self, redis: Redis, keys: Keys, *, visibility_timeout: float = 30.0, reader: Redis | None = None
    ) -> None:
        super().__init__(redis, keys)
        self.reader = reader or redis
        self.visibility_ms = int(visibility_timeout * 1000)
        #: Per shard, where the last ``XAUTOCLAIM`` scan of its pending entries stopped.
        self.cursors = ["0-0"] * keys.partitions
        #: The shards :meth:`take` and :meth:`reclaim` look at first: after the last served.
        self.next_new = 0
        self.next_stale = 0

    async def enqueue(self, job_id: str) -> QueueEntry:
        """Hand a stored job to the workers, in its partition's shard; the new entry."""
        shard = self.keys.partition_of(job_id)
        entry_id = await self.redis.xadd(self.keys.queue(shard), {"jobId": job_id})
        return QueueEntry(shard, str(entry_id), job_id)

    async def take(self, consumer: str, limit: int) -> list[QueueEntry]:
        """Up to ``limit`` entries no consumer has been given yet, now ``consumer``'s, without
        waiting. One from each shard in turn, starting after the shard served last, so that
        a busy shard cannot starve the others; then again from the shards that had one,
        until ``limit`` is reached. Never more than ``limit``: each round trip asks as many
        shards (``COUNT 1``) as entries are still wanted, no more. Once a round trip has met
        an empty shard, the shards not yet asked are asked which have new entries (one round
        trip), so that one free slot does not go round every empty shard one at a time."""
        taken: list[QueueEntry] = []
        order, yielded, narrowed = self.round(self.next_new), list[int](), False
        while len(taken) < limit and (order or yielded):
            if not order:  # every shard has been asked: again, those that had one
                order, yielded = yielded, []
            batch, order = order[: limit - len(taken)], order[limit - len(taken) :]
            replies = await self.each(batch, partial(self._read_new, consumer))
            got = [entry for shard, reply in replies for entry in self._new_entries(shard, reply)]
            taken += got
            yielded += [entry.shard for entry in got]
            if len(got) < len(batch) and len(order) > limit - len(taken) and not narrowed:
                narrowed, candidates = True, await self.with_new_entries(order)
                order = [shard for shard in order if shard in candidates]
        if taken:
            self.next_new = (taken[-1].shard + 1) % len(self.shards)
        return taken

    def _read_new(self, consumer: str, pipe: Pipeline, shard: int) -> object:
        return pipe.xreadgroup(QUEUE_GROUP, consumer, {self.keys.queue(shard): ">"}, count=1)

    def _new_entries(self, shard: int, reply: Any) -> list[QueueEntry]:
        return [
            QueueEntry(shard, entry_id, fields.get("jobId", ""))
            for _, entries in stream_entries(reply)
            for entry_id, fields in entries
        ]

    async def wait(self, consumer: str, shard: int, *, block_ms: int) -> list[QueueEntry]:
        """The next new entry of one shard, now ``consumer``'s, waiting up to ``block_ms``
        for one (on the reader). A shard without its group gets it back, and nothing."""
        key = self.keys.queue(shard)
        try:
            reply = await self.reader.xreadgroup(QUEUE_GROUP, consumer, {key: ">"}, count=1, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(shard)
            return []
        return self._new_entries(shard, reply)

    async def reclaim(self, consumer: str, limit: int = 1) -> list[QueueEntry]:
        """Up to ``limit`` entries idle past the visibility timeout, now ``consumer``'s.

        ``XAUTOCLAIM COUNT 1`` on each shard in turn, starting after the shard of the last
        stale entry found: each call looks at a few pending entries only, so a shard's
        cursor is kept between calls and followed, and a stale entry behind many fresh
        ones, on any shard, is found within a few looks."""
        found: list[QueueEntry] = []
        order, calls = self.round(self.next_stale), 0
        while order and len(found) < limit and calls < CLAIM_SCAN_CALLS:
            batch, order = order[: limit - len(found)], order[limit - len(found) :]
            calls += len(batch)
            for shard, reply in await self.each(batch, partial(self._autoclaim, consumer)):
                self.cursors[shard] = str(reply[0]) if reply else "0-0"
                claimed = [QueueEntry(shard, i, f.get("jobId", "")) for i, f in claimed_entries(reply)]
                found += claimed
                if not claimed and self.cursors[shard] != "0-0":
                    order.append(shard)  # more of its pending entries to look at
        if found:
            self.next_stale = (found[-1].shard + 1) % len(self.shards)
        return found

    def _autoclaim(self, consumer: str, pipe: Pipeline, shard: int) -> object:
        key, cursor = self.keys.queue(shard), self.cursors[shard]
        return pipe.xautoclaim(key, QUEUE_GROUP, consumer, self.visibility_ms, cursor, count=1)

    async def ack(self, entry: QueueEntry) -> None:
        """Done with an entry: acknowledge it and drop it, so the shard stays short."""
        key = self.keys.queue(entry.shard)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(key, QUEUE_GROUP, entry.id)
            pipe.xdel(key, entry.id)
            await pipe.execute()

    async def requeue(self, entry: QueueEntry) -> QueueEntry:
        """Give an entry back, untouched by this consumer: a new entry of its job at the end
        of its shard, and the old one acknowledged and dropped, in one transaction (one
        slot). Another worker, or this one later, takes the new one."""
        key = self.keys.queue(entry.shard)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"jobId": entry.job_id})
            pipe.xack(key, QUEUE_GROUP, entry.id)
            pipe.xdel(key, entry.id)
            new_id, _, _ = await pipe.execute()
        return QueueEntry(entry.shard, str(new_id), entry.job_id)

    async def refresh(self, consumer: str, entries: Iterable[QueueEntry]) -> None:
        """Reset the idle time of entries ``consumer`` holds: one ``XCLAIM … JUSTID`` per
        shard. Every shard is refreshed even when one refuses; then its error is raised."""
        ids: dict[int, list[int | bytes | str | memoryview]] = defaultdict(list)
        for entry in entries:
            ids[entry.shard].append(entry.id)
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, shard_ids in ids.items():
                pipe.xclaim(self.keys.queue(shard), QUEUE_GROUP, consumer, 0, shard_ids, justid=True)
            replies = await pipe.execute(raise_on_error=False)
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            raise errors[0]

    async def held_elsewhere(self, job: Job, entry: QueueEntry) -> bool:
        """Whether another entry of this job is held by a live run (its claim is fresh):
        then ``entry`` is a duplicate (a retried XADD, an interrupted hand-back)."""
        if not job.entry or job.entry == entry.id:
            return False
        pending = await self.redis.xpending_range(
            self.keys.queue_of(job.id), QUEUE_GROUP, min=job.entry, max=job.entry, count=1
        )
        return bool(pending) and int(pending[0]["time_since_delivered"]) < self.visibility_ms
