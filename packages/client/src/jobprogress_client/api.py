"""A small asyncio client of the jobprogress API: submit jobs, follow their events.

For scripts, test harnesses and the CLI; it speaks HTTP and SSE like any user would.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from .sse import SseMessage, read_messages

__all__ = ["Api", "ApiError", "ReceivedEvent", "collect_events", "submit_job"]


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Api:
    """The calls the ``jobprogress`` commands make, as one identity (a bearer token)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.base}{path}"
        async with self.http.request(method, url, json=body, headers=self.headers) as response:
            answer = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiError(response.status, answer)
            return answer


@dataclass(frozen=True)
class ReceivedEvent:
    id: str
    event: str
    data: dict[str, Any]


async def submit_job(http: aiohttp.ClientSession, base_url: str, **params: Any) -> str:
    """``POST /api/jobs``; the new job's id."""
    async with http.post(f"{base_url}/api/jobs", json=params) as response:
        body = await response.json()
        if response.status != 202:
            raise ApiError(response.status, body)
        return str(body["jobId"])


async def collect_events(
    http: aiohttp.ClientSession,
    url: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    timeout: float = 30.0,
    messages: list[SseMessage] | None = None,
) -> list[ReceivedEvent]:
    """The events of one SSE connection, until the server ends it or ``stop_after`` events.

    Every raw message (``retry``, comments) is also appended to ``messages`` when given.
    """
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[ReceivedEvent] = []
    async with asyncio.timeout(timeout), http.get(url, headers=headers) as response:
        if response.status != 200:
            raise ApiError(response.status, await response.text())
        async for message in read_messages(response):
            if messages is not None:
                messages.append(message)
            if message.event is None or message.data is None:
                continue
            events.append(ReceivedEvent(message.id or "", message.event, json.loads(message.data)))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events
