"""Reporting the events of an external job: a job that no worker runs, because its submitter
runs it (a script, a CI step, a Celery task), and reports what it does.

:func:`start_external_job` submits one (``"runner": "external"``) and gets its reporter
token; a :class:`Reporter` sends its events with ``POST /api/jobs/{id}/events``, in batches,
in order, each with a key of its own, so that a batch sent again after a lost answer appends
nothing twice. What the service answers tells whether a cancel was requested
(:attr:`Reporter.cancel_requested`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .api import ApiError
from .backoff import Backoff

__all__ = ["ExternalJob", "JobEnded", "Reporter", "start_external_job"]

#: The most events one request carries (the service's limit).
MAX_BATCH_EVENTS = 500
#: The most bytes of JSON one request carries (the service refuses bodies over 64 KiB).
MAX_BATCH_BYTES = 48 * 1024
#: How long a batch is sent again while the service is unreachable or busy, in seconds.
GIVE_UP_AFTER = 60.0


class JobEnded(Exception):
    """The job has ended (409): nothing more can be reported."""


@dataclass(frozen=True)
class ExternalJob:
    job_id: str
    reporter_token: str
    links: dict[str, str]


async def start_external_job(
    http: aiohttp.ClientSession, base_url: str, *, headers: dict[str, str] | None = None, **params: Any
) -> ExternalJob:
    """``POST /api/jobs`` with ``"runner": "external"`` and ``params`` (``type``, ``name``,
    ``steps``, ``timeLimitSeconds``), as the identity of ``headers``."""
    body = {"runner": "external", **params}
    async with http.post(f"{base_url}/api/jobs", json=body, headers=headers) as response:
        answer = await response.json(content_type=None)
        if response.status != 202:
            raise ApiError(response.status, answer)
    return ExternalJob(answer["jobId"], answer["reporterToken"], answer["links"])


class Reporter:
    """Sends the events of one external job, in order."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, job_id: str, reporter_token: str) -> None:
        self.http = http
        self.url = f"{base_url.rstrip('/')}/api/jobs/{job_id}/events"
        self.job_id = job_id
        self.headers = {"Authorization": f"Bearer {reporter_token}"}
        #: Whether the service said, in its last answer, that a cancel was requested.
        self.cancel_requested = False
        #: Requests made, for the curious (``jobprogress run`` reports it).
        self.requests = 0
        self._run = uuid.uuid4().hex[:12]
        self._sequence = 0

    def keyed(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` with a key of its own (unless it has one)."""
        if "key" in event:
            return event
        self._sequence += 1
        return {**event, "key": f"{self._run}:{self._sequence}"}

    async def send(self, events: Iterable[dict[str, Any]]) -> None:
        """Report ``events`` (keyed here if they carry no key), as few requests as the limits
        allow. :class:`JobEnded` once the job has ended; :class:`ApiError` for a refusal."""
        for batch in batches([self.keyed(event) for event in events]):
            await self._post(batch)

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GIVE_UP_AFTER
        backoff = Backoff(first=0.2, cap=5.0)
        while True:
            try:
                self.requests += 1
                async with self.http.post(self.url, json={"events": batch}, headers=self.headers) as response:
                    answer = await response.json(content_type=None)
                    status, retry_after = response.status, response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, answer, retry_after = 0, str(exc), None
            if status == 200:
                self.cancel_requested = bool(answer.get("cancelRequested"))
                return
            if status == 409:
                raise JobEnded(f"job {self.job_id} has ended")
            if status not in (0, 429, 502, 503, 504) or loop.time() > deadline:
                raise ApiError(status, answer)
            # The keys make sending the same batch again safe, whatever part arrived. A
            # Retry-After is waited instead of the delay, which lengthens all the same.
            delay = backoff.next()
            await asyncio.sleep(float(retry_after) if retry_after and retry_after.isdigit() else delay)


def batches(events: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """``events`` cut into runs of at most :data:`MAX_BATCH_EVENTS` events and about
    :data:`MAX_BATCH_BYTES` bytes, in order."""
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events:
        length = len(json.dumps(event)) + 1
        if batch and (len(batch) >= MAX_BATCH_EVENTS or size + length > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += length
    if batch:
        yield batch
