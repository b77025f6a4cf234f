"""The handler API: what job code receives to report progress, log lines, steps, metrics,
artifacts and annotations, and to learn that it should stop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from jobprogress_core.event_data import EtaEstimate, annotation_data, artifact_data, metric_data, step_data
from jobprogress_core.model import EventType, Job, JobStatus, now_iso
from jobprogress_core.redis import REDIS_ERRORS, retry_while_unavailable
from jobprogress_core.store import JobStore

#: The step whose block the running code is in (set by :meth:`JobContext.step`).
CURRENT_STEP: contextvars.ContextVar[str | None] = contextvars.ContextVar("jobprogress_step", default=None)


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
        self._eta = EtaEstimate(time.monotonic(), job.progress)
        self._step_ids: set[str] = set()

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
        """Report that ``step`` of ``total_steps`` is done (a ``progress`` event, with
        ``etaSeconds`` once the pace so far gives an estimate)."""
        percent = max(0, min(100, round(step * 100 / total_steps))) if total_steps else 0
        self.progress_percent = percent
        data: dict[str, Any] = {
            "status": JobStatus.PROCESSING.value,
            "progress": percent,
            "message": message,
            "step": step,
            "totalSteps": total_steps,
        }
        eta = self._eta.update(time.monotonic(), percent)
        if eta is not None:
            data["etaSeconds"] = eta
        await self._append(
            EventType.PROGRESS,
            data,
            progress=percent,
            message=message,
            step=step,
            total_steps=total_steps,
        )

    async def log(self, line: str, level: str = "info") -> None:
        """Append one log line (a ``log`` event)."""
        await self._append(EventType.LOG, {"level": level, "line": line})

    @property
    def current_step(self) -> str | None:
        """The step whose block the caller is in (its ``stepId``), for the metrics reported
        inside it; each task its own, so steps run side by side keep theirs."""
        return CURRENT_STEP.get()

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[str]:
        """A named step: a ``step`` event when it starts (``running``) and when it ends
        (``completed``; ``cancelled`` or ``failed`` when the block raises, which it then
        does). Yields the step's id; metrics reported inside the block belong to it."""
        step_id = self._new_step_id(name)
        started_at = now_iso()
        await self._append(EventType.STEP, step_data(step_id, "running", name=name, started_at=started_at))
        inside = CURRENT_STEP.set(step_id)

        async def end(status: str) -> None:
            CURRENT_STEP.reset(inside)
            ended = step_data(step_id, status, name=name, started_at=started_at, ended_at=now_iso())
            await self._append(EventType.STEP, ended)

        try:
            yield step_id
        except BaseException as exc:
            # The step's end is told if it can be; what the block raised goes on either way.
            with contextlib.suppress(JobEnded, ReportFailed):
                await end("cancelled" if isinstance(exc, JobCancelled | asyncio.CancelledError) else "failed")
            raise
        await end("completed")

    def _new_step_id(self, name: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:100] or "step"
        step_id, n = base, 1
        while step_id in self._step_ids:
            n += 1
            step_id = f"{base}-{n}"
        self._step_ids.add(step_id)
        return step_id

    async def metric(self, key: str, value: float, step: int | None = None) -> None:
        """Report one value of the metric ``key`` (a ``metric`` event), at ``step`` (a count
        along the chart's x axis) if given."""
        await self.metrics({key: value}, step=step)

    async def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Report several metrics at once (one ``metric`` event)."""
        data = metric_data(values, step=step)
        if (step_id := self.current_step) is not None:
            data["stepId"] = step_id
        await self._append(EventType.METRIC, data)

    async def artifact(
        self, name: str, *, url: str, kind: str = "file", mime: str | None = None, size: int | None = None
    ) -> None:
        """Announce something the job produced (an ``artifact`` event): a file, an image,
        a link or a table at ``url`` (http or https)."""
        await self._append(EventType.ARTIFACT, artifact_data(name, url=url, kind=kind, mime=mime, size=size))

    async def annotate(self, level: str, message: str, *, title: str | None = None) -> None:
        """A notice shown above the log (an ``annotation`` event): ``notice``, ``warning``
        or ``error``."""
        await self._append(EventType.ANNOTATION, annotation_data(level, message, title=title))

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
