"""The handler API: what job code receives to report progress and log lines, and to learn
that it should stop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.redis import REDIS_ERRORS, retry_while_unavailable
from jobprogress_core.store import JobStore


class JobError(Exception):
    """Raised by a handler to fail its job with a message meant for the user."""


class JobCancelled(Exception):
    """Cancellation was requested: raised by :meth:`JobContext.check_cancelled`."""


class JobEnded(Exception):
    """The job ended elsewhere (for example cancelled while it was being started)."""


class ReportFailed(Exception):
    """A report could not be written: Redis stayed unreachable past the outage grace."""


class JobContext:
    """Handed to a handler for one run of one job.

    Every report is written with the run's claim (its queue entry): if another run has taken
    the job over, :class:`jobprogress_core.store.ClaimLost` is raised and the handler stops.
    While Redis is unreachable, reports are retried for ``outage_grace`` seconds, so a short
    outage only delays them; past that, :class:`ReportFailed` is raised.
    """

    def __init__(self, store: JobStore, job: Job, *, entry: str = "", outage_grace: float = 0.0) -> None:
        self._store = store
        self.job = job
        self.entry = entry
        self.outage_grace = outage_grace
        self.progress_percent = job.progress

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @property
    def resume_step(self) -> int:
        """Steps already reported done by an earlier attempt (0 for a fresh job)."""
        return self.job.step

    async def _append(self, event_type: EventType, data: dict[str, Any], **fields: str | int | None) -> None:
        token = uuid.uuid4().hex  # the same for every retry: a retry never appends twice
        try:
            event = await retry_while_unavailable(
                lambda: self._store.append(
                    self.job_id, event_type, data, token=token, holder=self.entry or None, **fields
                ),
                grace=self.outage_grace,
            )
        except REDIS_ERRORS as exc:
            raise ReportFailed(str(exc)) from exc
        if event is None:
            raise JobEnded(f"job {self.job_id} has already ended")

    async def progress(self, step: int, total_steps: int, message: str) -> None:
        """Report that ``step`` of ``total_steps`` is done (a ``progress`` event)."""
        percent = max(0, min(100, round(step * 100 / total_steps))) if total_steps else 0
        self.progress_percent = percent
        await self._append(
            EventType.PROGRESS,
            {
                "status": JobStatus.PROCESSING.value,
                "progress": percent,
                "message": message,
                "step": step,
                "totalSteps": total_steps,
            },
            progress=percent,
            message=message,
            step=step,
            total_steps=total_steps,
        )

    async def log(self, line: str, level: str = "info") -> None:
        """Append one log line (a ``log`` event)."""
        await self._append(EventType.LOG, {"level": level, "line": line})

    async def cancel_requested(self) -> bool:
        try:
            return await self._store.cancel_requested(self.job_id)
        except REDIS_ERRORS:
            return False  # unknown while Redis is away: keep going, ask again later

    async def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job's owner asked to cancel it."""
        if await self.cancel_requested():
            raise JobCancelled(self.job_id)

    async def sleep(self, seconds: float) -> None:
        """Sleep, checking for cancellation every second."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(left, 1.0))
            await self.check_cancelled()


Handler = Callable[[JobContext], Awaitable[str | None]]


class HandlerRegistry:
    """Job types and the handlers that run them."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, job_type: str) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self._handlers[job_type] = handler
            return handler

        return decorator

    def get(self, job_type: str) -> Handler | None:
        return self._handlers.get(job_type)

    def types(self) -> list[str]:
        return sorted(self._handlers)
