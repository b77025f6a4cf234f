"""Celery tasks as external jobs (``pip install jobprogress-client[celery]``).

The web side submits an external job for its user and hands the job's ID and reporter token
to the task (:func:`submit_task` does both); the task, decorated with :func:`jobprogress_task`,
gets a :class:`JobProgress` as its first argument: plain synchronous calls, usable from
ordinary Celery task code::

    @app.task
    @jobprogress_task
    def import_rows(progress: JobProgress, rows: list[str]) -> str:
        for number, row in enumerate(rows, start=1):
            progress.check_cancelled()  # JobCancelled once the user asked to cancel
            progress.log(f"importing {row}")
            progress.step(number, len(rows))
        return f"{len(rows)} rows imported"

The return value ends the job ``complete`` (its ``str()`` the result), an exception ends it
``failed`` (and goes on to Celery), :class:`JobCancelled` ends it ``cancelled`` (the task then
returns ``None``).

Events are sent by a thread of the task's own, with the async :class:`~.reporter.Reporter`
on an event loop of that thread: in batches (a flush at most every :data:`FLUSH_SECONDS`, at
once when a batch is full), in order, each keyed so that a retried batch doubles nothing, and
all of them before the final event. Each answer says whether a cancel was requested; while
the task sends nothing, the last event is sent again every :data:`CANCEL_POLL_SECONDS` (a
duplicate: nothing is appended) to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp

from .reporter import MAX_BATCH_EVENTS, ExternalJob, JobEnded, Reporter, start_external_job

if TYPE_CHECKING:
    import celery

__all__ = ["JobCancelled", "JobProgress", "job_progress", "jobprogress_task", "submit_task"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8083"
FLUSH_SECONDS = 0.25
CANCEL_POLL_SECONDS = 2.0
#: Events waiting to be sent before the task's calls wait for room (a bound, not a queue
#: that grows with a chatty task).
MAX_PENDING = 10 * MAX_BATCH_EVENTS
MAX_TEXT = 10_000


class JobCancelled(Exception):
    """A cancel was requested: raised by :meth:`JobProgress.check_cancelled`."""


class JobProgress:
    """The events of one external job, reported from synchronous code."""

    def __init__(self, job_id: str, reporter_token: str, *, url: str | None = None) -> None:
        self.job_id = job_id
        self.url = (url or os.environ.get("JOBPROGRESS_URL") or DEFAULT_URL).rstrip("/")
        self._token = reporter_token
        self._pending: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._closing = False
        self._cancel_requested = False
        self._ended = False
        #: What went wrong sending, if anything: what was left is dropped, the task goes on.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"jobprogress-{job_id[:16]}", daemon=True)
        self._thread.start()

    def status(self, message: str) -> None:
        self._add({"type": "status", "message": message[:500]})

    def step(self, step: int, total: int, message: str | None = None) -> None:
        event: dict[str, Any] = {"type": "progress", "step": step, "totalSteps": total}
        if message:
            event["message"] = message[:500]
        self._add(event)

    def log(self, line: str, level: str = "info") -> None:
        self._add({"type": "log", "line": line[:8192], "level": level})

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was requested (or the job has ended otherwise, its time limit):
        as the last answer of the service said."""
        return self._cancel_requested or self._ended

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.job_id}: cancel requested")

    def complete(self, result: str | None = None) -> None:
        self._finish({"type": "complete", "result": None if result is None else result[:MAX_TEXT]})

    def fail(self, error: str) -> None:
        self._finish({"type": "failed", "error": error[:MAX_TEXT] or "failed"})

    def cancel(self, error: str = "Cancelled") -> None:
        self._finish({"type": "cancelled", "error": error[:MAX_TEXT] or "Cancelled"})

    @property
    def ended(self) -> bool:
        """Whether the final event has been handed over (the job is reported to its end)."""
        return self._closing

    def _add(self, event: dict[str, Any]) -> None:
        with self._changed:
            if self._closing:
                raise RuntimeError(f"job {self.job_id}: its final event was already reported")
            while len(self._pending) >= MAX_PENDING and self._thread.is_alive():
                self._changed.wait()
            if not self._thread.is_alive() and self._thread.ident is not None:
                return  # reporting stopped (see error): nothing more is kept
            self._pending.append(event)
            if len(self._pending) >= MAX_BATCH_EVENTS:
                self._changed.notify_all()

    def _finish(self, final: dict[str, Any]) -> None:
        """Hand over the final event, and wait until everything is sent."""
        with self._changed:
            if self._closing:
                return
            self._pending.append(final)
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            http = loop.run_until_complete(_session())
            try:
                self._send_loop(loop, Reporter(http, self.url, self.job_id, self._token))
            finally:
                loop.run_until_complete(http.close())
        except BaseException as exc:  # never out of the thread: the task goes on, unreported
            self.error = exc
            logger.exception("job %s: reporting stopped", self.job_id)
        finally:
            loop.close()
            with self._changed:
                self._changed.notify_all()  # a task waiting for room waits no more

    def _send_loop(self, loop: asyncio.AbstractEventLoop, reporter: Reporter) -> None:
        asked = time.monotonic()
        last: dict[str, Any] | None = None
        sent = 0
        while True:
            with self._changed:
                if not self._closing and len(self._pending) < MAX_BATCH_EVENTS:
                    self._changed.wait(FLUSH_SECONDS)
                events, self._pending = self._pending, []
                closing = self._closing
                self._changed.notify_all()  # room again
            if events:
                keyed = [reporter.keyed(event) for event in events]
                last = keyed[-1]
            elif not closing and time.monotonic() - asked >= CANCEL_POLL_SECONDS:
                # Nothing to send: the last event again (a duplicate, appended nothing), or
                # a first one, for the answer that tells whether a cancel was requested.
                keyed = [last or reporter.keyed({"type": "status", "message": "Running"})]
                last = keyed[-1]
            else:
                keyed = []
            if keyed and not self._ended:
                try:
                    loop.run_until_complete(reporter.send(keyed))
                except JobEnded:
                    self._ended = True  # its time limit, say: nothing more is sent
                asked = time.monotonic()
                self._cancel_requested = reporter.cancel_requested
                sent += len(events)
            if closing:
                logger.info("job %s reported: %d events in %d requests", self.job_id, sent, reporter.requests)
                return


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, sock_connect=10))


@contextlib.contextmanager
def job_progress(job_id: str, reporter_token: str, *, url: str | None = None) -> Iterator[JobProgress]:
    """A :class:`JobProgress` whose job ends with the block: ``failed`` with an exception
    (raised on), ``cancelled`` with :class:`JobCancelled` (not raised on), else ``complete``
    unless the block ended it itself."""
    progress = JobProgress(job_id, reporter_token, url=url)
    try:
        yield progress
    except JobCancelled as exc:
        progress.cancel(str(exc))
    except BaseException as exc:
        progress.fail(f"{type(exc).__name__}: {exc}")
        raise
    else:
        progress.complete()


def jobprogress_task(fn: Callable[..., Any] | None = None, *, url: str | None = None) -> Any:
    """Decorate a Celery task's function (under ``@app.task``): the task takes the keyword
    arguments ``job_id`` and ``reporter_token`` and its function gets a :class:`JobProgress`
    first; its return value ends the job ``complete`` with ``str()`` of it."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def task(*args: Any, job_id: str, reporter_token: str, **kwargs: Any) -> Any:
            with job_progress(job_id, reporter_token, url=url) as progress:
                result = fn(progress, *args, **kwargs)
                progress.complete(None if result is None else str(result))
                return result
            return None  # cancelled

        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(task, name, getattr(fn, name))
        return task

    return decorate if fn is None else decorate(fn)


async def submit_task(
    http: aiohttp.ClientSession,
    base_url: str,
    task: celery.Task[Any, Any],
    *args: Any,
    headers: dict[str, str] | None = None,
    job: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ExternalJob:
    """Submit an external job as the identity of ``headers`` (``job``: its ``name``,
    ``steps``, ``timeLimitSeconds``…) and send ``task`` with ``args`` and ``kwargs``, plus the
    job's ``job_id`` and ``reporter_token``."""
    external = await start_external_job(http, base_url, headers=headers, **(job or {"name": task.name}))
    await asyncio.to_thread(
        task.apply_async,
        args,
        {**kwargs, "job_id": external.job_id, "reporter_token": external.reporter_token},
    )
    return external
