"""A small SSE client over aiohttp: parses a response body into events and comments.

Used by the tests and by API clients that want exact control of ``Last-Event-ID``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

__all__ = ["SseMessage", "read_messages"]


@dataclass(frozen=True)
class SseMessage:
    """One dispatched message: an event (``event``/``data``/``id``), a ``retry``, or a comment."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None


async def read_messages(response: aiohttp.ClientResponse) -> AsyncIterator[SseMessage]:
    """Yield messages as they arrive, following the SSE parsing rules for our fields."""
    fields: dict[str, str] = {}
    data_lines: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if fields or data_lines:
                retry = fields.get("retry")
                yield SseMessage(
                    event=fields.get("event"),
                    data="\n".join(data_lines) if data_lines else None,
                    id=fields.get("id"),
                    retry=int(retry) if retry and retry.isdigit() else None,
                )
            fields, data_lines = {}, []
            continue
        if line.startswith(":"):
            yield SseMessage(comment=line[1:].lstrip(" "))
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data_lines.append(value)
        else:
            fields[name] = value
