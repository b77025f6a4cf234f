"""Submitting a job for the workers (``POST /api/jobs``): the submission counted against the
submitter's limit, the job's hash with its first event, its queue entry, and its owner's
history and feed.

On one Redis that is one Lua script (``lua/submit_job.lua``): all of it, or nothing when the
limit refuses. The scripts of the submissions that arrive in the same turn of the event loop
go out together, one pipeline through an :class:`.AutoPipeline` (one connection, one write
and one read for all of them, where each would take its own): a script that is sent twice
(a reply lost, the pipeline sent again) finds its job there and does nothing more. Where a
creation waits for replicas (:mod:`.replication`), each script is sent on its own, with its
``WAIT`` after it.

On Redis Cluster a script may only name keys of one slot, and the limit (the submitter's
tag), the history (the owner's) and the feed (its own partition's) are in other slots than
the job (its partition's). There the same script does what lies in the job's slot, its
hash, first event and queue entry (never one of them without the others), after the limit's
own script and before the index's pipeline: three round trips, in that order, so a refused
submission writes nothing there either.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio.cluster import RedisCluster

from .autopipeline import AutoPipeline
from .limits import SUBMISSIONS, RateLimit
from .model import EventType, Job, dumps
from .redis import REDIS_ERRORS
from .replication import run_replicated
from .store import JobStore, feed_data, load_script
from .web import STORE

__all__ = ["SUBMITTER", "Submitter", "submitter_ctx"]

logger = logging.getLogger(__name__)

#: What the limit's 429 says is too many.
WHAT = "job submissions"


class Submitter:
    """Stores and queues new jobs, each within its owner's submission ``limit``."""

    def __init__(self, store: JobStore, limit: RateLimit) -> None:
        self.store = store
        self.limit = limit
        self.on_cluster = isinstance(store.redis, RedisCluster)
        self._script = store.redis.register_script(load_script("submit_job.lua"))
        self._batch = AutoPipeline(store.redis)

    async def submit(self, job: Job, event_data: dict[str, Any]) -> None:
        """Store ``job`` with its first ``status`` event (``event_data``), queue it and index
        it, as its owner's submission; :class:`.TooManyRequests` past the owner's limit.
        A call that redis-py repeats (its reply was lost) finds the job there and does
        nothing again."""
        store, keys, owner = self.store, self.store.keys, job.owner
        if self.on_cluster:
            await self.limit.hit(owner, WHAT)
        script_keys = [keys.job(job.id), keys.events(job.id), keys.queue_of(job.id)]
        if not self.on_cluster:
            script_keys += [self.limit.key(owner), keys.history(owner), keys.feed(owner)]
        args = [
            str(store.stream_maxlen), EventType.STATUS.value, store.first_event(job, event_data), job.id,
            str(self.limit.interval_ms), str(self.limit.limit), str(job.created_ms),
            str(store.history_limit), str(store.index_ttl), feed_data(job.id), dumps(store.new_fields(job)),
        ]  # fmt: skip
        if self.on_cluster or store.replication.replicas > 0:
            status, *reply = await run_replicated(
                store.redis, self._script, script_keys, args, store.replication, "create"
            )
        else:
            status, *reply = await self._batch.run_script(self._script, script_keys, args)
        if status == "limit":
            raise self.limit.refusal(int(reply[0]), WHAT)
        if status == "again":
            logger.info("job %s was stored by an earlier try of the same call", job.id)
        if self.on_cluster:
            await self._index(job)

    async def _index(self, job: Job) -> None:
        """On a cluster, the owner's history and feed, once the job is stored and queued. It
        will run whatever happens here: a failure costs its place in the owner's list and
        ``mine`` stream, not the submission (a retry would submit it twice)."""
        try:
            await self.store.index(job)
        except REDIS_ERRORS as exc:
            logger.warning("job %s is queued, but not in its owner's history: %s", job.id, exc)


SUBMITTER = web.AppKey("submitter", Submitter)


async def submitter_ctx(app: web.Application) -> AsyncIterator[None]:
    """The submitter of job-queue-service (after the submission limit's context)."""
    app[SUBMITTER] = Submitter(app[STORE], app[SUBMISSIONS])
    yield
