"""The handler API: what job code receives to report progress and log lines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from jobprogress_core.model import EventType, Job, JobStatus
from jobprogress_core.store import JobStore


class JobError(Exception):
    """Raised by a handler to fail its job with a message meant for the user."""


class JobContext:
    """Handed to a handler for one run of one job."""

    def __init__(self, store: JobStore, job: Job) -> None:
        self._store = store
        self.job = job
        self.progress_percent = 0

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    async def progress(self, step: int, total_steps: int, message: str) -> None:
        """Report that ``step`` of ``total_steps`` is done (a ``progress`` event)."""
        percent = max(0, min(100, round(step * 100 / total_steps))) if total_steps else 0
        self.progress_percent = percent
        await self._store.append(
            self.job_id,
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
        await self._store.append(self.job_id, EventType.LOG, {"level": level, "line": line})

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


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
