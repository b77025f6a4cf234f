"""The SSE parser used by the tests and API clients."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

from jobprogress_client import SseMessage, read_messages


async def test_parses_fields_comments_and_multiline_data(aiohttp_client: object) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = "retry: 3000\n\n: ping\n\nid: 1-0\nevent: log\ndata: a\ndata: b\n\ndata:x\n\n"
        return web.Response(body=body.encode(), content_type="text/event-stream")

    app = web.Application()
    app.router.add_get("/", handler)
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    async with client.get("/") as response:
        messages = [message async for message in read_messages(response)]
    assert messages == [
        SseMessage(retry=3000),
        SseMessage(comment="ping"),
        SseMessage(event="log", data="a\nb", id="1-0"),
        SseMessage(data="x"),
    ]
