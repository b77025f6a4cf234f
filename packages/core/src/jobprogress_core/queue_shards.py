"""The queue's shards and their consumer groups: what every command over several shards
needs, and what is read or kept of the groups as a whole.

The queue is one stream per partition (:meth:`.Keys.queue`), each with its consumer group
:data:`.QUEUE_GROUP`. On Redis Cluster a command may only name keys of one slot, so every
command here names one shard. Commands on several shards go in one non-transactional
pipeline, one command per shard, which a cluster client splits by node: one round trip per
node. The entries themselves (enqueue, take, reclaim, acknowledge) are :mod:`.queue`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from .keys import QUEUE_GROUP, Keys
from .model import parse_stream_id
from .redis import range_entries

__all__ = ["DEAD_CONSUMER_IDLE_MS", "QueueEntry", "QueueShards"]

#: Consumers idle this long with nothing pending belong to workers that are gone.
DEAD_CONSUMER_IDLE_MS = 3_600_000

T = TypeVar("T")


@dataclass(frozen=True)
class QueueEntry:
    """One entry of the queue: its shard (the job's partition), its id in that shard's
    stream, and the job it is for. Entry IDs are per stream (two shards can both hold
    ``1700000000000-0``), so the shard is part of what names an entry."""

    shard: int
    id: str
    job_id: str


class QueueShards:
    """Every shard of the queue (``keys.queue(p)`` for each partition) and its group."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.shards = range(keys.partitions)

    def round(self, first: int) -> list[int]:
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

    async def each(
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

    async def with_new_entries(self, shards: Sequence[int]) -> set[int]:
        """Those of ``shards`` that may hold entries no consumer has been given: their newest
        entry is past their group's last delivered one (``XREVRANGE … COUNT 1`` and
        ``XINFO GROUPS``, one round trip per node). Never misses such a shard; may name one
        whose new entries were deleted, or one that cannot answer (its read will say why)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.xrevrange(self.keys.queue(shard), "+", "-", count=1)
                pipe.xinfo_groups(self.keys.queue(shard))
            replies = await pipe.execute(raise_on_error=False)
        found = set()
        for shard, newest, groups in zip(shards, replies[::2], replies[1::2], strict=True):
            if isinstance(newest, Exception) or isinstance(groups, Exception):
                found.add(shard)
            elif newest:
                delivered = next((g["last-delivered-id"] for g in groups if g["name"] == QUEUE_GROUP), "0-0")
                if parse_stream_id(range_entries(newest)[0][0]) > parse_stream_id(str(delivered)):
                    found.add(shard)
        return found

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
