"""``jobprogress watch``: one job's stream, several jobs' one stream, or every job of the caller.

Every form follows one stream with the same loop (:func:`follow`): it reconnects after a
dropped connection, waiting the ``retry`` the service asked for, and sends back the last SSE
ID seen as ``Last-Event-ID``, so that no event is missed or shown twice. On the streams of
several jobs that ID is a compound one holding every job's position.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

from .api import Api, ApiError
from .protocol import TERMINAL_STATUS_OF, EventType, JobStatus
from .screen import Screen, bar_of
from .sse import read_messages

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "exit_code",
    "follow",
    "retry_after",
    "watch",
    "watch_many",
    "watch_mine",
]

EXIT_CODES = {JobStatus.COMPLETED: 0, JobStatus.FAILED: 1, JobStatus.CANCELLED: 3}
EXIT_ERROR = 4
#: The final statuses from the worst, for the exit code of several jobs.
WORST_FIRST = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.COMPLETED)

#: Takes one event of the stream; true once the watch has seen all it waits for.
OnEvent = Callable[[EventType, dict[str, Any]], Awaitable[bool]]


def exit_code(statuses: list[JobStatus]) -> int:
    """0 if every job completed, else the exit code of the worst final status among them
    (``EXIT_ERROR`` for a job that has not ended)."""
    worst = min(
        statuses, key=lambda s: WORST_FIRST.index(s) if s.terminal else -1, default=JobStatus.COMPLETED
    )
    return EXIT_CODES.get(worst, EXIT_ERROR)


@dataclass
class Shown:
    """One job on the screen: its state as its events tell it, and how its lines begin."""

    job: dict[str, Any]
    key: str = ""  # its bar on the screen
    head: str = ""  # before each of its lines: nothing when it is the only job
    steps: bool = False  # whether its bar shows the step


async def follow(api: Api, path: str, screen: Screen, on_event: OnEvent) -> None:
    """Follow the stream at ``path`` until ``on_event`` has seen all it waits for, or the
    service answers 204 (the stream has ended, and its end was seen), reconnecting after drops."""
    last_id: str | None = None
    retry = 3.0
    while True:
        headers = {**api.headers, **({"Last-Event-ID": last_id} if last_id else {})}
        told: float | None = None  # what a 429 or 503 asked us to wait, else the stream's retry
        try:
            async with api.http.get(f"{api.base}{path}", headers=headers) as response:
                if response.status == 204:  # ended, and we have seen the end
                    return
                if response.status in (429, 503):  # too many streams, or a busy instance
                    told = retry_after(response.headers.get("Retry-After"))
                    why = "too many streams open" if response.status == 429 else "the service is busy"
                    screen.line(f"({why}; retrying in {told:g} s)")
                elif 400 <= response.status < 500:
                    raise ApiError(response.status, await response.json(content_type=None))
                elif response.status == 200:
                    async for message in read_messages(response):
                        if message.retry is not None:
                            retry = message.retry / 1000
                        if message.event is None or message.data is None:
                            continue
                        done = await on_event(EventType(message.event), json.loads(message.data))
                        last_id = message.id or last_id  # once shown: resumed after it
                        if done:
                            return
                    screen.line("(stream closed by the server; reconnecting)")
                else:
                    screen.line(f"(the service answered {response.status}; reconnecting)")
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            screen.line(f"(connection lost: {exc.__class__.__name__}; reconnecting)")
        await asyncio.sleep(retry if told is None else told)


def retry_after(value: str | None, default: float = 5.0) -> float:
    """The seconds a ``Retry-After`` asks for: delta-seconds or an HTTP date (a proxy may
    send either), at most an hour; ``default`` when absent or unreadable."""
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), 3600.0) if math.isfinite(seconds) else default


async def watch(api: Api, job_id: str, screen: Screen) -> JobStatus:
    """Follow the job's events to its end, reconnecting after drops; its final status."""
    shown = Shown(await api.call("GET", f"/api/jobs/{job_id}"))
    screen.show(bar_of(shown.job))
    ended: list[JobStatus] = []

    async def on_event(kind: EventType, data: dict[str, Any]) -> bool:
        status = apply(screen, shown, kind, data)
        ended.extend([status] if status else [])
        return bool(ended)

    await follow(api, f"/api/progress/{job_id}", screen, on_event)
    return ended[0] if ended else JobStatus((await api.call("GET", f"/api/jobs/{job_id}"))["status"])


@dataclass
class Board:
    """The jobs of one stream of several, each with its bar, in the order they first came."""

    api: Api
    screen: Screen
    shown: dict[str, Shown] = field(default_factory=dict)
    ended: dict[str, JobStatus] = field(default_factory=dict)

    async def meet(self, job_id: str) -> Shown:
        """A job first seen: its name (else its type) from the service, to head its lines."""
        job = await self.api.call("GET", f"/api/jobs/{job_id}")
        label = str(job.get("name") or job.get("type") or "")
        known = {key: job[key] for key in ("jobId", "name", "type", "totalSteps") if job.get(key)}
        return Shown(known, key=job_id, head=f"{job_id[:8]}  {label:<16.16}  ", steps=True)

    async def take(self, kind: EventType, data: dict[str, Any]) -> None:
        job_id = str(data["jobId"])
        if job_id not in self.shown:
            self.shown[job_id] = await self.meet(job_id)
        status = apply(self.screen, self.shown[job_id], kind, data)
        if status is not None:
            self.ended[job_id] = status


async def watch_many(api: Api, job_ids: list[str], screen: Screen) -> list[JobStatus]:
    """Follow several jobs on one stream, each to its end; their final statuses."""
    board = Board(api, screen)

    async def on_event(kind: EventType, data: dict[str, Any]) -> bool:
        await board.take(kind, data)
        return len(board.ended) == len(job_ids)

    await follow(api, "/api/progress?" + urlencode([("job", job_id) for job_id in job_ids]), screen, on_event)
    for job_id in job_ids:  # after a 204, those whose end came while we were away
        if job_id not in board.ended:
            board.ended[job_id] = JobStatus((await api.call("GET", f"/api/jobs/{job_id}"))["status"])
    return list(board.ended.values())


async def watch_mine(api: Api, screen: Screen) -> list[JobStatus]:
    """Follow every unfinished job of the caller, and each one it submits, until interrupted."""
    board = Board(api, screen)

    async def on_event(kind: EventType, data: dict[str, Any]) -> bool:
        await board.take(kind, data)
        return False

    await follow(api, "/api/progress/mine", screen, on_event)  # ends only if the service says so
    return list(board.ended.values())


def apply(screen: Screen, shown: Shown, kind: EventType, data: dict[str, Any]) -> JobStatus | None:
    """Show one event of a job; its final status after a terminal one."""
    job, head = shown.job, shown.head
    if kind is EventType.LOG:
        level = data.get("level", "info")
        screen.line(f"  {head}{'' if level == 'info' else level.upper() + ': '}{data.get('line', '')}")
        return None
    if kind is EventType.ANNOTATION:
        title = f"{data['title']}: " if data.get("title") else ""
        screen.line(f"{head}{str(data.get('level', 'notice')).upper()}: {title}{data.get('message', '')}")
        return None
    if kind is EventType.ARTIFACT:
        screen.line(f"{head}artifact {data.get('name', '')}: {data.get('url', '')}")
        return None
    if kind is EventType.METRIC:
        return None  # a chart's point: for the page
    if kind is EventType.STEP:
        job["currentStep"] = (
            data.get("name") or data.get("stepId") if data.get("status") == "running" else None
        )
        screen.show(f"{head}{bar_of(job, steps=shown.steps)}", shown.key)
        return None
    if kind is EventType.RESET:
        job.clear()
        screen.line(f"{head}(older events were trimmed: from the job's current state)")
    if kind is EventType.PROGRESS:
        job["etaSeconds"] = data.get("etaSeconds")  # absent: no estimate now
    job.update({key: value for key, value in data.items() if value is not None})
    if kind is EventType.COMPLETE:
        job["progress"] = 100
    screen.show(f"{head}{bar_of(job, steps=shown.steps)}", shown.key)
    if kind.terminal:
        if kind is EventType.FAILED:
            screen.line(f"{head}FAILED: {data.get('error', '')}")
        elif kind is EventType.COMPLETE:
            screen.line(f"{head}COMPLETED: {data.get('result', '')}")
        else:
            screen.line(f"{head}CANCELLED")
        return TERMINAL_STATUS_OF[kind]
    return None
