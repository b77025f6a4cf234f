"""The job queue: one stream per partition (a *shard*), each with its own consumer group,
and every command on them.

Why shards: on Redis Cluster a command may only name keys of one slot, and a job's keys
live in its partition's slot (:mod:`.keys`). The queue is cut the same way: a job is queued
in its own partition's shard (:meth:`.Keys.queue_of`), and every command here names one
shard only (``XREADGROUP``, ``XAUTOCLAIM``, ``XCLAIM``, the ``MULTI`` of an acknowledgement).
Commands on several shards go in one non-transactional pipeline, one command per shard,
which a cluster client splits by node.

Entry IDs are per stream: two shards can both hold ``1700000000000-0``. So an entry is a
:class:`QueueEntry`, its shard with its id. A job's entries are all in its own shard, so the
job's hash names the entry that holds it (``entry``) by its id alone.

job-queue-service adds one entry per submitted job (:meth:`JobQueue.enqueue`); every worker
is a consumer of every shard's group (see ``worker_service.intake`` for how it reads them).
Delivery is at-least-once: an entry whose worker died is delivered again. The job's own
state (status, attempts, which entry's run holds it) is in its hash
(:class:`jobprogress_core.store.JobStore`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from .keys import QUEUE_GROUP, Keys
from .model import Job
from .redis import claimed_entries, range_entries, stream_entries

__all__ = ["CLAIM_SCAN_CALLS", "DEAD_CONSUMER_IDLE_MS", "JobQueue", "QueueEntry"]

#: XAUTOCLAIM calls one look for stale entries may make, over all shards (each call looks
#: at about ten pending entries of one shard; the next look goes on where this one stopped).
CLAIM_SCAN_CALLS = 50
#: Consumers idle this long with nothing pending belong to workers that are gone.
DEAD_CONSUMER_IDLE_MS = 3_600_000

T = TypeVar("T")


@dataclass(frozen=True)
class QueueEntry:
    """One entry of the queue: its shard (the job's partition), its id in that shard's
    stream, and the job it is for."""

    shard: int
    id: str
    job_id: str


class JobQueue:
    """The queue shards (``keys.queue(p)`` for every partition) and their consumer groups.

    ``reader`` is the client of the blocking reads (:meth:`wait`; one of its own: a read
    holds its connection for the whole wait); ``redis`` by default. An entry idle for
    ``visibility_timeout`` seconds belongs to a worker that stopped responding.
    """

    def __init__(
        self, redis: Redis, keys: Keys, *, visibility_timeout: float = 30.0, reader: Redis | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.reader = reader or redis
        self.visibility_ms = int(visibility_timeout * 1000)
        self.shards = range(keys.partitions)
        #: Per shard, where the last ``XAUTOCLAIM`` scan of its pending entries stopped.
        self.cursors = ["0-0"] * keys.partitions
        #: The shards :meth:`take` and :meth:`reclaim` look at first: after the last served.
        self.next_new = 0
        self.next_stale = 0

    def _round(self, first: int) -> list[int]:
        """Every shard once, starting at ``first``."""
        return [(first + n) % len(self.shards) for n in self.shards]

    async def ensure_group(self, shard: int | None = None) -> None:
        """Create the consumer group (and the stream) of a shard, or of every shard, unless
        it exists."""
        for each in self.shards if shard is None else (shard,):
            try:
                await self.redis.xgroup_create(self.keys.queue(each), QUEUE_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

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
        shards (``COUNT 1``) as entries are still wanted, no more."""
        taken: list[QueueEntry] = []
        order, yielded = self._round(self.next_new), list[int]()
        while len(taken) < limit and (order or yielded):
            if not order:  # every shard has been asked: again, those that had one
                order, yielded = yielded, []
            batch, order = order[: limit - len(taken)], order[limit - len(taken) :]
            replies = await self._each(batch, partial(self._read_new, consumer))
            got = [entry for shard, reply in replies for entry in self._new_entries(shard, reply)]
            taken += got
            yielded += [entry.shard for entry in got]
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
        order, calls = self._round(self.next_stale), 0
        while order and len(found) < limit and calls < CLAIM_SCAN_CALLS:
            batch, order = order[: limit - len(found)], order[limit - len(found) :]
            calls += len(batch)
            for shard, reply in await self._each(batch, partial(self._autoclaim, consumer)):
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

    async def _each(
        self, shards: Sequence[int], command: Callable[[Pipeline, int], object]
    ) -> list[tuple[int, Any]]:
        """``command`` on each shard, in one pipeline: (shard, reply) of those that answered.

        A shard without its group gets it back (and gives nothing this time). Another error
        is raised only when no shard answered: the entries the others gave are ours now and
        must not be dropped, and an error that lasts comes back at the next call."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                command(pipe, shard)
            replies = await pipe.execute(raise_on_error=False)
        answered, errors = [], []
        for shard, reply in zip(shards, replies, strict=True):
            if not isinstance(reply, Exception):
                answered.append((shard, reply))
            elif "NOGROUP" in str(reply):
                await self.ensure_group(shard)
            else:
                errors.append(reply)
        if errors and not answered:
            raise errors[0]
        return answered

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

    async def held_by(self, consumer: str) -> list[QueueEntry]:
        """Every entry pending for ``consumer``, on every shard."""
        held = []
        for shard in self.shards:
            key = self.keys.queue(shard)
            pending = self.redis.xpending_range(key, QUEUE_GROUP, "-", "+", 1000, consumername=consumer)
            for item in await _unless_no_group(pending, []):
                entry_id = str(item["message_id"])
                entries = range_entries(await self.redis.xrange(key, entry_id, entry_id))
                held.append(QueueEntry(shard, entry_id, entries[0][1].get("jobId", "") if entries else ""))
        return held

    async def forget_dead_consumers(self, consumer: str) -> int:
        """Delete the consumers besides ``consumer`` idle for an hour with nothing pending,
        shard by shard (every worker process has a consumer name of its own, so the groups
        would otherwise only grow); how many deletions."""
        deleted = 0
        for shard in self.shards:
            key = self.keys.queue(shard)
            dead = [
                c["name"] for c in await _unless_no_group(self.redis.xinfo_consumers(key, QUEUE_GROUP), [])
                if c["name"] != consumer and int(c["pending"]) == 0 and int(c["idle"]) > DEAD_CONSUMER_IDLE_MS
            ]  # fmt: skip
            for name in dead:
                await self.redis.xgroup_delconsumer(key, QUEUE_GROUP, name)
            deleted += len(dead)
        return deleted

    async def leave(self, consumer: str) -> None:
        """Remove ``consumer`` from every shard's group where it holds no entry."""
        for shard in self.shards:
            key = self.keys.queue(shard)
            consumers = await _unless_no_group(self.redis.xinfo_consumers(key, QUEUE_GROUP), [])
            if any(c["name"] == consumer and int(c["pending"]) == 0 for c in consumers):
                await self.redis.xgroup_delconsumer(key, QUEUE_GROUP, consumer)

    async def counts(self) -> tuple[int, int]:
        """Jobs waiting for a worker and jobs a worker holds (delivered, not yet
        acknowledged), summed over the shards. Each shard's pair is read in one transaction;
        acknowledged entries are deleted (:meth:`ack`), so what a shard holds besides its
        pending entries is waiting."""
        waiting = held = 0
        for shard in self.shards:
            key = self.keys.queue(shard)
            counted = await _unless_no_group(self._shard_counts(key), None)
            length, pending = counted or (int(await self.redis.xlen(key)), 0)  # no worker started yet
            waiting += max(length - pending, 0)
            held += pending
        return waiting, held

    async def _shard_counts(self, key: str) -> tuple[int, int]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(key)
            pipe.xpending(key, QUEUE_GROUP)
            length, pending = await pipe.execute()
        return int(length), int(pending["pending"])


async def _unless_no_group(call: Awaitable[T], default: T) -> T:
    """What ``call`` answers, or ``default`` when its shard has no group (or no stream) yet:
    no worker has started on it."""
    try:
        return await call
    except ResponseError as exc:
        if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
            raise
        return default
