"""The time limits of external jobs, which no worker watches: per partition, a sorted set
of its running external jobs by the end of their time limit, shared by every job-queue
instance.

A sweeper claims the jobs that are due in one Lua script per partition
(``lua/claim_deadlines.lua``), which pushes each claimed deadline back by the claim time:
one instance ends a job, and if it dies first, another claims the job again once the claim
lapses.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from .keys import Keys
from .store import load_script

__all__ = ["Deadlines"]


class Deadlines:
    def __init__(self, redis: Redis, keys: Keys, *, claim_seconds: float = 60.0) -> None:
        self.redis = redis
        self.keys = keys
        self.claim_ms = int(claim_seconds * 1000)
        self._claim = redis.register_script(load_script("claim_deadlines.lua"))

    async def add(self, job_id: str, at: float) -> None:
        """Watch ``job_id`` until ``at`` (epoch seconds)."""
        await self.redis.zadd(self._key(job_id), {job_id: int(at * 1000)})

    async def remove(self, job_id: str) -> None:
        await self.redis.zrem(self._key(job_id), job_id)

    async def deadline(self, job_id: str) -> float | None:
        score = await self.redis.zscore(self._key(job_id), job_id)
        return None if score is None else float(score) / 1000

    async def claim_due(self, *, now: float | None = None, count: int = 100) -> list[str]:
        """The jobs past their deadline, claimed by this caller: at most ``count`` of each
        partition."""
        now_ms = int((time.time() if now is None else now) * 1000)
        due = []
        for partition in range(self.keys.partitions):
            key = self.keys.external_deadlines(partition)
            due += await self._claim(keys=[key], args=[now_ms, self.claim_ms, count])
        return [part.decode() if isinstance(part, bytes) else str(part) for part in due]

    def _key(self, job_id: str) -> str:
        return self.keys.external_deadlines(self.keys.partition_of(job_id))
