"""Job state and event log in Redis: every write of the services goes through here.

The job's hash and its event stream are changed together by one Lua script, so
``GET /api/jobs/{id}`` and the SSE stream never disagree.
"""

from __future__ import annotations

import uuid
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from .keys import Keys
from .model import TERMINAL_STATUS_OF, Event, EventType, Job, dumps, now_iso
from .redis import range_entries


def _script(name: str) -> str:
    return (files(__package__) / "lua" / name).read_text(encoding="utf-8")


class JobStore:
    def __init__(self, redis: Redis, keys: Keys, *, stream_maxlen: int = 10_000) -> None:
        self.redis = redis
        self.keys = keys
        self.stream_maxlen = stream_maxlen
        self._create = redis.register_script(_script("create_job.lua"))
        self._apply = redis.register_script(_script("apply_event.lua"))

    async def create(self, job: Job, event_data: dict[str, Any]) -> str | None:
        """Store a new job with its first ``status`` event; ``None`` if the id is taken."""
        fields = job.to_hash()
        fields.pop("last_event_id")
        data = {"jobId": job.id, **event_data, "ts": event_data.get("ts") or now_iso()}
        args: list[str] = [str(self.stream_maxlen), EventType.STATUS.value, dumps(data)]
        for name, value in fields.items():
            args += [name, value]
        entry_id = await self._create(keys=[self.keys.job(job.id), self.keys.events(job.id)], args=args)
        return str(entry_id) if entry_id else None

    async def enqueue(self, job_id: str) -> str:
        """Hand a stored job to the workers (queue stream, consumer group ``workers``)."""
        return str(await self.redis.xadd(self.keys.queue, {"jobId": job_id}))

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
        **fields: str | int | None,
    ) -> Event | None:
        """Append an event and set job fields atomically.

        ``data`` gets ``jobId`` and ``ts``. Returns the stored event, or ``None`` when the
        job is missing or already finished (nothing follows a terminal event). A call
        repeated with the same ``token`` (redis-py retries a command that timed out) does
        not append again: it returns the ID of the first append.
        """
        payload = {"jobId": job_id, **data, "ts": now_iso()}
        token = token or uuid.uuid4().hex
        args: list[str] = [str(self.stream_maxlen), event_type.value, dumps(payload), token]
        for name, value in fields.items():
            args += [name, "" if value is None else str(value)]
        entry_id = await self._apply(keys=[self.keys.job(job_id), self.keys.events(job_id)], args=args)
        if not entry_id:
            return None
        return Event(id=str(entry_id), type=event_type, data=payload)

    async def finish(
        self, job_id: str, event_type: EventType, *, result: str | None = None, error: str | None = None
    ) -> Event | None:
        """End a job with its terminal event (``complete``, ``failed`` or ``cancelled``)."""
        status = TERMINAL_STATUS_OF[event_type]
        data: dict[str, Any] = {"status": status.value}
        fields: dict[str, str | int | None] = {"status": status.value, "finished_at": now_iso()}
        if event_type is EventType.COMPLETE:
            data.update(progress=100, result=result)
            fields.update(progress=100, result=result, message="Completed")
        else:
            job = await self.get(job_id)
            data.update(progress=job.progress if job else 0, error=error)
            fields.update(error=error, message=status.value.capitalize())
        return await self.append(job_id, event_type, data, token=None, **fields)

    async def events(
        self, job_id: str, after: str | None = None, *, until: str = "+", count: int = 500
    ) -> list[Event]:
        """Events strictly after ``after`` (from the start if ``None``) up to ``until`` inclusive."""
        start = f"({after}" if after else "-"
        reply = await self.redis.xrange(self.keys.events(job_id), start, until, count=count)
        return [Event.from_entry(entry_id, fields) for entry_id, fields in range_entries(reply)]

    async def first_event_id(self, job_id: str) -> str | None:
        reply = range_entries(await self.redis.xrange(self.keys.events(job_id), "-", "+", count=1))
        return reply[0][0] if reply else None

    async def last_event_id(self, job_id: str) -> str | None:
        reply = range_entries(await self.redis.xrevrange(self.keys.events(job_id), "+", "-", count=1))
        return reply[0][0] if reply else None
