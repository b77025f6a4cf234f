"""Job state and event log in Redis: every write of a job's state goes through here (the
queue's own commands are in :mod:`.queue`).

The job's hash and its event stream are changed together by one Lua script, so
``GET /api/jobs/{id}`` and the SSE stream never disagree: ``lua/append_events.lua`` appends
a batch of events, the worker's one at a time under its claim, a reporter's with their
idempotency keys (:mod:`.reports`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from itertools import chain
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .event_data import JOB_LIMITS, EventLimit
from .keys import Keys
from .model import TERMINAL_STATUS_OF, Event, EventType, Job, dumps, now_iso, valid_job_id
from .redis import REDIS_ERRORS, Entry, range_entries
from .replication import Replication, run_replicated

logger = logging.getLogger(__name__)

#: Entries kept in the stream of ended jobs (:meth:`Keys.endings`), about.
ENDINGS_MAXLEN = 10_000


@dataclass(frozen=True)
class HistoryCursor:
    """Where a page of an owner's history ends: creation time (ms) and job id."""

    created_ms: int
    job_id: str

    def __str__(self) -> str:
        return f"{self.created_ms}-{self.job_id}"

    @classmethod
    def parse(cls, value: str) -> HistoryCursor:
        created, _, job_id = value.partition("-")
        if not created.isascii() or not created.isdigit() or not valid_job_id(job_id):
            raise ValueError(f"not a history cursor: {value[:80]!r}")
        return cls(int(created), job_id)


class ClaimLost(Exception):
    """Another run (another worker or queue entry) has taken the job over; stop working on it."""


@dataclass(frozen=True)
class NewEvent:
    """One event of a batch to append: its type, its data as stored, the job fields it
    sets, and its idempotency key (``None``: none)."""

    type: str
    data: dict[str, Any]
    fields: Mapping[str, str | int | None] = field(default_factory=dict)
    key: str | None = None


@dataclass(frozen=True)
class Appended:
    """What a batch did: ``status`` is ``missing`` (no such job), ``ended`` (nothing
    appended: the job had ended), ``again`` (a retry of the last batch, same token: nothing
    appended, ``ids`` is the ID of its last event) or ``ok`` (``ids``: the ID of each event
    in order, ``None`` for a duplicate key). ``cancel_requested`` as it was before."""

    status: str
    cancel_requested: bool = False
    ids: list[str | None] = field(default_factory=list)


#: The Lua files of functions that a script calls, which its text begins with.
SCRIPT_FUNCTIONS = {
    "rate_limit.lua": ("gcra.lua",),
    "create_job.lua": ("new_job.lua",),
    "submit_job.lua": ("gcra.lua", "new_job.lua"),
}


def load_script(name: str) -> str:
    """The text of a Lua script of ``lua/``, after the functions it calls."""
    parts = [*SCRIPT_FUNCTIONS.get(name, ()), name]
    return "\n".join((files(__package__) / "lua" / part).read_text(encoding="utf-8") for part in parts)


class JobStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        stream_maxlen: int = 10_000,
        retention_seconds: int = 86_400,
        history_limit: int = 1000,
        replication: Replication | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self.retention_seconds = retention_seconds
        self.history_limit = history_limit
        #: How many replicas confirm a job's creation and its end (:mod:`.replication`).
        self.replication = replication or Replication()
        self._create = redis.register_script(load_script("create_job.lua"))
        self._append = redis.register_script(load_script("append_events.lua"))

    @property
    def index_ttl(self) -> int:
        """Seconds an owner's history and feed live after their last change."""
        return self.retention_seconds + 3600

    @staticmethod
    def new_fields(job: Job) -> dict[str, str]:
        """The hash of a new job, as the scripts that create one write it (``lua/new_job.lua``
        adds ``last_event_id``)."""
        fields = job.to_hash()
        del fields["last_event_id"]
        return fields

    @staticmethod
    def first_event(job: Job, event_data: dict[str, Any]) -> str:
        """The data of a new job's first event, its ``status``: ``event_data`` with ``jobId``
        and ``ts``, the job's creation unless ``event_data`` says otherwise."""
        ts = event_data.get("ts") or job.created_at or now_iso()
        return dumps({"jobId": job.id, **event_data, "ts": ts})

    async def create(self, job: Job, event_data: dict[str, Any]) -> str | None:
        """Store a new job with its first ``status`` event; ``None`` if the id is taken.
        (A job for the workers is stored and queued in one step: :mod:`.submissions`.)"""
        keys = [self.keys.job(job.id), self.keys.events(job.id)]
        fields = chain(*self.new_fields(job).items())
        args = [str(self.stream_maxlen), EventType.STATUS.value, self.first_event(job, event_data), *fields]
        entry_id = await run_replicated(self.redis, self._create, keys, args, self.replication, "create")
        if not entry_id:
            return None
        await self.index(job)
        return str(entry_id)

    async def index(self, job: Job) -> None:
        """Add the job to its owner's history (newest first) and feed of new jobs: both capped,
        expiring when idle. Two keys in two slots: one pipeline, not one transaction."""
        key, feed = self.keys.history(job.owner), self.keys.feed(job.owner)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {job.id: job.created_ms})
            pipe.zremrangebyrank(key, 0, -self.history_limit - 1)
            pipe.expire(key, self.index_ttl)
            pipe.xadd(feed, {"type": EventType.STATUS.value, "data": feed_data(job.id)},
                      maxlen=self.history_limit, approximate=True)  # fmt: skip
            pipe.expire(feed, self.index_ttl)
            await pipe.execute()

    async def keep_feed(self, owner: str) -> None:
        """The owner's feed lives as long as their history from now on: while someone
        watches it, a job of theirs that runs for long keeps the entry that names it."""
        await self.redis.expire(self.keys.feed(owner), self.index_ttl)

    async def feed_entries(self, owner: str, *, until: str, count: int) -> list[Entry]:
        """The owner's feed up to ``until`` inclusive, newest first: their latest jobs."""
        return range_entries(await self.redis.xrevrange(self.keys.feed(owner), until, "-", count=count))

    async def get(self, job_id: str) -> Job | None:
        fields: dict[str, str] = await self.redis.hgetall(self.keys.job(job_id))  # type: ignore[assignment]
        return Job.from_hash(fields) if fields else None

    async def append(
        self,
        job_id: str,
        event_type: EventType,
        data: dict[str, Any],
        *,
        token: str | None = None,
        holder: str | None = None,
        **fields: str | int | None,
    ) -> Event | None:
        """Append an event and set job fields atomically.

        ``data`` gets ``jobId`` and ``ts``. Returns the stored event, or ``None`` when the
        job is missing or already finished (nothing follows a terminal event). A call
        repeated with the same ``token`` (redis-py retries a command that timed out) does
        not append again: it returns the ID of the first append. With ``holder``, the append
        happens only while the run of queue entry ``holder`` holds the job, else :class:`ClaimLost` is raised.
        Once the job has ended, its keys expire after the retention period.
        """
        payload = {"jobId": job_id, **data, "ts": now_iso()}
        event = NewEvent(event_type.value, payload, fields)
        done = await self.append_batch(job_id, [event], token=token or uuid.uuid4().hex, holder=holder)
        entry_id = done.ids[0] if done.status in ("ok", "again") else None
        if not entry_id:
            return None
        return Event(id=entry_id, type=event_type, data=payload)

    async def append_batch(
        self,
        job_id: str,
        events: Sequence[NewEvent],
        *,
        token: str | None = None,
        holder: str | None = None,
        keys_ttl: int | None = None,
        keys_kept: int = 0,
    ) -> Appended:
        """Append ``events`` in order and set their job fields, in one atomic step: all of
        them, or nothing when the job is missing or has ended and the batch has an event
        not appended before. With ``token``, a call repeated with the same token appends
        nothing again (``again``). With ``holder``, the batch is appended only while the
        run of queue entry ``holder`` holds the job, else :class:`ClaimLost` is raised.
        With ``keys_ttl``, an event whose idempotency key was appended before is skipped;
        the job's latest ``keys_kept`` keys are kept beside it, ``keys_ttl`` seconds while
        it runs (renewed by every batch). Once the job has ended, its keys expire after
        the retention period."""
        keyed = keys_ttl is not None
        if not keyed and any(event.key for event in events):
            raise ValueError("idempotency keys need keys_ttl")
        args: list[str] = [
            str(self.stream_maxlen), str(self.retention_seconds), token or "", holder or "",
            str(keys_ttl or 0), str(keys_kept), str(len(events)),
            *(str(JOB_LIMITS[kind]) for kind in ("step", "metric", "artifact", "annotation")),
        ]  # fmt: skip
        for event in events:
            pairs = [part for name, value in event.fields.items() for part in (name, _text(value))]
            args += [event.type, dumps(event.data), event.key or "", str(len(pairs) // 2), *pairs]
        keys = [self.keys.job(job_id), self.keys.events(job_id)]
        if keyed:
            keys.append(self.keys.report_keys(job_id))
        ending = any(event.type in TERMINAL_STATUS_OF for event in events)
        replication = self.replication if ending else Replication()
        try:
            reply = await run_replicated(self.redis, self._append, keys, args, replication, "end")
        except ResponseError as exc:
            if str(exc).startswith("LOSTCLAIM"):
                raise ClaimLost(f"job {job_id} is held by another run") from None
            raise
        status, *rest = [_decode(part) for part in reply]
        if status == "missing":
            return Appended(status)
        if status == "limit":
            raise EventLimit(rest[0], int(rest[1]))
        cancel, *ids = rest
        appended = Appended(status, cancel == "1", [entry_id or None for entry_id in ids])
        if ending and status == "ok" and appended.ids[-1] is not None:
            await self._announce_end(job_id)
        return appended

    async def _announce_end(self, job_id: str) -> None:
        """Tell whoever follows :meth:`Keys.endings` (the Web Push sender) that the job has
        just ended. After the atomic end, not in it (another slot), and never failing it: a
        lost announcement loses a notification, not the job's end."""
        try:
            await self.redis.xadd(
                self.keys.endings(), {"jobId": job_id}, maxlen=ENDINGS_MAXLEN, approximate=True
            )
        except REDIS_ERRORS as exc:
            logger.warning("job %s ended, but its end could not be announced: %s", job_id, exc)

    async def finish(
        self,
        job_id: str,
        event_type: EventType,
        *,
        result: str | None = None,
        error: str | None = None,
        progress: int | None = None,
        holder: str | None = None,
        token: str | None = None,
    ) -> Event | None:
        """End a job with its terminal event (``complete``, ``failed`` or ``cancelled``).
        ``progress`` is the job's progress when it failed or was cancelled (read from the job
        when not given); pass the same ``token`` when retrying the call."""
        status = TERMINAL_STATUS_OF[event_type]
        data: dict[str, Any] = {"status": status.value}
        fields: dict[str, str | int | None] = {"status": status.value, "finished_at": now_iso()}
        if event_type is EventType.COMPLETE:
            data.update(progress=100, result=result)
            fields.update(progress=100, result=result, message="Completed")
        else:
            if progress is None:
                job = await self.get(job_id)
                progress = job.progress if job else 0
            data.update(progress=progress, error=error)
            fields.update(error=error, message=status.value.capitalize())
        return await self.append(job_id, event_type, data, token=token, holder=holder, **fields)

    async def cancel_requested(self, job_id: str) -> bool:
        flag = await self.redis.hget(self.keys.job(job_id), "cancel_requested")
        return flag == "1"

    async def history(
        self, owner: str, *, limit: int, before: HistoryCursor | None = None
    ) -> tuple[list[Job], HistoryCursor | None]:
        """The owner's jobs, newest first: a page of at most ``limit`` older than ``before``,
        and the cursor of the next page (``None`` at the end). Entries whose job has expired
        are pruned as they are met."""
        key = self.keys.history(owner)
        jobs: list[Job] = []
        cursor = before
        while len(jobs) < limit:
            entries = await self._history_after(key, cursor, limit - len(jobs))
            if not entries:
                return jobs, None
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, _ in entries:
                    pipe.hgetall(self.keys.job(job_id))
                found = await pipe.execute()
            gone = [job_id for (job_id, _), fields in zip(entries, found, strict=True) if not fields]
            if gone:
                await self.redis.zrem(key, *gone)
            jobs += [Job.from_hash(fields) for fields in found if fields]
            cursor = HistoryCursor(entries[-1][1], entries[-1][0])
        more = await self._history_after(key, cursor, 1)
        return jobs, cursor if more else None

    async def _history_after(
        self, key: str, cursor: HistoryCursor | None, count: int
    ) -> list[tuple[str, int]]:
        """Up to ``count`` (job id, created ms) entries after ``cursor``, newest first.
        Entries of the same millisecond come in reverse id order, as Redis sorts them."""
        top = str(cursor.created_ms) if cursor else "+inf"
        ties = 64  # jobs of one owner created in one millisecond, at most
        page: list[tuple[str, float]] = await self.redis.zrevrangebyscore(  # type: ignore[assignment]
            key, top, "-inf", start=0, num=count + ties, withscores=True
        )
        entries = [(str(job_id), int(score)) for job_id, score in page]
        if cursor is not None:
            entries = [
                (job_id, ms) for job_id, ms in entries
                if ms < cursor.created_ms or job_id < cursor.job_id
            ]  # fmt: skip
        return entries[:count]

    async def events(
        self, job_id: str, after: str | None = None, *, until: str = "+", count: int = 500
    ) -> list[Event]:
        """Events strictly after ``after`` (from the start if ``None``) up to ``until`` inclusive."""
        entries = await self.entries(job_id, after, until=until, count=count)
        return [Event.from_entry(entry_id, fields) for entry_id, fields in entries]

    async def entries(
        self, job_id: str, after: str | None = None, *, until: str = "+", count: int = 500
    ) -> list[Entry]:
        """What :meth:`events` reads, as the log holds it (for passing on undecoded)."""
        start = f"({after}" if after else "-"
        return range_entries(await self.redis.xrange(self.keys.events(job_id), start, until, count=count))

    async def get_with_first_event(self, job_id: str) -> tuple[Job | None, str | None]:
        """The job and the ID of its oldest retained event, in one round trip."""
        return (await self.get_many_with_first_events([job_id]))[0]

    async def get_many_with_first_events(self, job_ids: Sequence[str]) -> list[tuple[Job | None, str | None]]:
        """:meth:`get_with_first_event` of each job, in one pipeline."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
                pipe.xrange(self.keys.events(job_id), "-", "+", count=1)
            replies = await pipe.execute()
        found = []
        for fields, first in zip(replies[::2], replies[1::2], strict=True):
            entries = range_entries(first)
            found.append(((Job.from_hash(fields) if fields else None), (entries[0][0] if entries else None)))
        return found

    async def feed_jobs(self, owner: str, handles: Sequence[str]) -> list[str | None]:
        """The job each entry of the owner's feed names (``None`` for entries gone)."""
        key = self.keys.feed(owner)
        async with self.redis.pipeline(transaction=False) as pipe:
            for handle in handles:
                pipe.xrange(key, handle, handle, count=1)
            replies = await pipe.execute()
        return [_feed_job(range_entries(reply)) for reply in replies]

    async def first_event_id(self, job_id: str) -> str | None:
        reply = range_entries(await self.redis.xrange(self.keys.events(job_id), "-", "+", count=1))
        return reply[0][0] if reply else None

    async def last_event_id(self, job_id: str) -> str | None:
        reply = range_entries(await self.redis.xrevrange(self.keys.events(job_id), "+", "-", count=1))
        return reply[0][0] if reply else None


def feed_data(job_id: str) -> str:
    """The ``data`` of the feed entry that names a new job."""
    return dumps({"jobId": job_id})


def _feed_job(entries: list[Entry]) -> str | None:
    if not entries:
        return None
    job_id = json.loads(entries[0][1]["data"]).get("jobId")
    return job_id if isinstance(job_id, str) and valid_job_id(job_id) else None


def _text(value: str | int | None) -> str:
    return "" if value is None else str(value)


def _decode(part: Any) -> str:
    return part.decode() if isinstance(part, bytes) else str(part)
