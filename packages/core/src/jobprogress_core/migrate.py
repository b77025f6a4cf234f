"""Move a single-Redis deployment from the key layout before partitions to the partitioned
one (``python -m jobprogress_core.migrate``; README, "Moving to the partitioned layout").

Before partitions a job's keys were tagged with its own id (``job:{<id>}``), the queue was
one stream (``jobs``) and the external deadlines one sorted set. The move, with the
job-queue and worker services stopped (progress-service too, or it shows nothing new until
it runs the new version):

- each job's hash, event stream and report keys are renamed to its partition's names, in
  one atomic step per job: TTLs and stream entry IDs stay as they are, so a client resumes
  with its ``Last-Event-ID`` exactly where it was;
- each job the old queue still holds goes into its partition's shard. One that was running
  (its worker stopped without handing it back, or died) is handed back first, as a stopping
  worker does: a ``status`` event says so, and the next worker continues it from its last
  step;
- each running external job's deadline goes into its partition's set.

It can be run again: what has moved is not found again, and a run cut short goes on where
it stopped. The owners' histories, limits and stream leases keep their names.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from .keys import Keys
from .model import EventType, Job, JobStatus
from .queue import JobQueue
from .redis import create_redis, range_entries
from .settings import Settings
from .store import JobStore

__all__ = ["Moved", "migrate"]

logger = logging.getLogger(__name__)

#: Rename a job's keys (hash, then its stream and report keys when there are): all or none.
RENAME_JOB = """
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 3])
  end
end
return 1
"""


@dataclass
class Moved:
    jobs: int = 0
    queued: int = 0
    handed_back: int = 0
    deadlines: int = 0


class LegacyKeys:
    """The names before partitions."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.job_pattern = re.compile(rf"\A{re.escape(prefix)}job:\{{([^{{}}]+)\}}\Z")

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{{{job_id}}}"

    def events(self, job_id: str) -> str:
        return f"{self.job(job_id)}:events"

    def report_keys(self, job_id: str) -> str:
        return f"{self.job(job_id)}:keys"

    @property
    def queue(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def external_deadlines(self) -> str:
        return f"{self.prefix}external:deadlines"


async def migrate(redis: Redis, keys: Keys, *, dry_run: bool = False) -> Moved:
    """Move everything of the old layout under ``keys.prefix`` to ``keys``'s names."""
    legacy = LegacyKeys(keys.prefix)
    moved = Moved()
    moved.jobs = await _move_jobs(redis, legacy, keys, dry_run=dry_run)
    store = JobStore(redis, keys)
    moved.queued, moved.handed_back = await _move_queue(redis, legacy, store, dry_run=dry_run)
    moved.deadlines = await _move_deadlines(redis, legacy, keys, dry_run=dry_run)
    return moved


async def _move_jobs(redis: Redis, legacy: LegacyKeys, keys: Keys, *, dry_run: bool) -> int:
    rename = redis.register_script(RENAME_JOB)
    count = 0
    async for key in redis.scan_iter(match=f"{legacy.job('*')}", count=1000):
        found = legacy.job_pattern.match(key)
        if found is None:
            continue  # a stream or report keys: renamed with their hash
        job_id = found.group(1)
        old = [legacy.job(job_id), legacy.events(job_id), legacy.report_keys(job_id)]
        new = [keys.job(job_id), keys.events(job_id), keys.report_keys(job_id)]
        if dry_run or await rename(keys=old + new):
            count += 1
        else:
            logger.warning("job %s is in both layouts; its old keys are left as they are", job_id)
    return count


async def _move_queue(redis: Redis, legacy: LegacyKeys, store: JobStore, *, dry_run: bool) -> tuple[int, int]:
    """Every job of the old queue into its shard, once, oldest first; the old queue goes."""
    queue = JobQueue(redis, store.keys)
    entries = range_entries(await redis.xrange(legacy.queue, "-", "+"))
    queued = handed_back = 0
    seen: set[str] = set()
    for _, fields in entries:
        job_id = fields.get("jobId", "")
        if not job_id or job_id in seen:
            continue
        seen.add(job_id)
        job = await store.get(job_id) or await _legacy_job(redis, legacy, job_id)  # not moved: a dry run
        if job is None or job.status.terminal:
            continue
        queued += 1
        running = job.status is JobStatus.PROCESSING
        handed_back += running
        if dry_run:
            continue
        if running:
            message = "Handed back on the move to partitioned keys; a worker continues"
            await store.append(
                job_id,
                EventType.STATUS,
                {"status": JobStatus.QUEUED.value, "message": message},
                status=JobStatus.QUEUED.value,
                message=message,
                worker="",
                entry="",
            )
        await queue.ensure_group()
        await queue.enqueue(job_id)
    if not dry_run:
        await redis.delete(legacy.queue)
    return queued, handed_back


async def _legacy_job(redis: Redis, legacy: LegacyKeys, job_id: str) -> Job | None:
    fields: dict[str, str] = await redis.hgetall(legacy.job(job_id))  # type: ignore[assignment]
    return Job.from_hash(fields) if fields else None


async def _move_deadlines(redis: Redis, legacy: LegacyKeys, keys: Keys, *, dry_run: bool) -> int:
    reply: list[Any] = await redis.zrange(legacy.external_deadlines, 0, -1, withscores=True)
    deadlines = [(str(job_id), float(score)) for job_id, score in reply]
    if dry_run or not deadlines:
        return len(deadlines)
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, score in deadlines:
            pipe.zadd(keys.external_deadlines(keys.partition_of(job_id)), {job_id: score})
        await pipe.execute()
    await redis.delete(legacy.external_deadlines)
    return len(deadlines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobprogress_core.migrate",
        description="Move a single-Redis deployment to the partitioned key layout "
        "(REDIS_URL, JOBPROGRESS_KEY_PREFIX and JOBPROGRESS_PARTITIONS as the services have them).",
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings.from_env("job-queue-service")
    moved = asyncio.run(_run(settings, dry_run=args.dry_run))
    verb = "would move" if args.dry_run else "moved"
    print(
        f"{verb}: {moved.jobs} jobs, {moved.queued} queued jobs ({moved.handed_back} handed back), "
        f"{moved.deadlines} external deadlines"
    )
    return 0


async def _run(settings: Settings, *, dry_run: bool) -> Moved:
    redis = create_redis(settings)
    try:
        return await migrate(redis, Keys(settings.key_prefix, settings.partitions), dry_run=dry_run)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    sys.exit(main())
