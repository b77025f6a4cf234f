"""A worker's standing in the queue's consumer group: which entries it holds, taking over
stale ones, keeping its own fresh, and leaving no dead consumers behind."""

from __future__ import annotations

from redis.exceptions import ResponseError

from jobprogress_core.keys import QUEUE_GROUP, Keys
from jobprogress_core.model import Job
from jobprogress_core.redis import Entry, claimed_entries, range_entries
from jobprogress_core.store import JobStore

#: XAUTOCLAIM calls one look for a stale entry may take (each scans about ten entries).
CLAIM_SCAN_CALLS = 50
#: Consumers idle this long with nothing pending belong to workers that are gone.
DEAD_CONSUMER_IDLE_MS = 3_600_000


class Claims:
    def __init__(self, store: JobStore, keys: Keys, name: str, *, visibility_timeout: float) -> None:
        self.store = store
        self.keys = keys
        self.name = name
        self.visibility_ms = int(visibility_timeout * 1000)
        self.cursor = "0-0"

    async def ensure_group(self) -> None:
        try:
            await self.store.redis.xgroup_create(self.keys.queue, QUEUE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take_stale(self) -> list[Entry]:
        """At most one entry idle past the visibility timeout, now ours.

        Each ``XAUTOCLAIM`` looks at a few pending entries only; the cursor is kept between
        calls and followed, so a stale entry behind many fresh ones is still found."""
        for _ in range(CLAIM_SCAN_CALLS):
            reply = await self.store.redis.xautoclaim(
                self.keys.queue, QUEUE_GROUP, self.name, self.visibility_ms, self.cursor, count=1
            )
            self.cursor = str(reply[0]) if reply else "0-0"
            entries = claimed_entries(reply)
            if entries or self.cursor == "0-0":
                return entries
        return []

    async def refresh(self, entry_ids: list[str]) -> None:
        """Reset the idle time of entries we hold (``XCLAIM … JUSTID``)."""
        if entry_ids:
            ids: list[int | bytes | str | memoryview] = list(entry_ids)
            await self.store.redis.xclaim(self.keys.queue, QUEUE_GROUP, self.name, 0, ids, justid=True)

    async def held_elsewhere(self, job: Job, entry_id: str) -> bool:
        """Whether another queue entry of this job is held by a live run (its claim is
        fresh): then ``entry_id`` is a duplicate (a retried XADD, an interrupted hand-back)."""
        if not job.entry or job.entry == entry_id:
            return False
        pending = await self.store.redis.xpending_range(
            self.keys.queue, QUEUE_GROUP, min=job.entry, max=job.entry, count=1
        )
        return bool(pending) and int(pending[0]["time_since_delivered"]) < self.visibility_ms

    async def held_by_me(self) -> list[tuple[str, str]]:
        """(entry id, job id) of every entry pending for this consumer."""
        pending = await self.store.redis.xpending_range(
            self.keys.queue, QUEUE_GROUP, min="-", max="+", count=1000, consumername=self.name
        )
        held = []
        for item in pending:
            entry_id = str(item["message_id"])
            entries = range_entries(await self.store.redis.xrange(self.keys.queue, entry_id, entry_id))
            held.append((entry_id, entries[0][1].get("jobId", "") if entries else ""))
        return held

    async def forget_dead_consumers(self) -> int:
        """Delete consumers idle for an hour with nothing pending (every worker process has
        a consumer name of its own, so the group would otherwise only grow)."""
        consumers = await self.store.redis.xinfo_consumers(self.keys.queue, QUEUE_GROUP)
        dead = [
            c["name"] for c in consumers
            if c["name"] != self.name and int(c["pending"]) == 0 and int(c["idle"]) > DEAD_CONSUMER_IDLE_MS
        ]  # fmt: skip
        for name in dead:
            await self.store.redis.xgroup_delconsumer(self.keys.queue, QUEUE_GROUP, name)
        return len(dead)

    async def leave(self) -> None:
        """Remove this consumer from the group, unless it still holds entries."""
        consumers = await self.store.redis.xinfo_consumers(self.keys.queue, QUEUE_GROUP)
        mine = next((c for c in consumers if c["name"] == self.name), None)
        if mine is not None and int(mine["pending"]) == 0:
            await self.store.redis.xgroup_delconsumer(self.keys.queue, QUEUE_GROUP, self.name)
