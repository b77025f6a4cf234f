"""``web/jobprogress.js`` in real headless Chromium against a scripted server (no stack): it
reads SSE by the WHATWG rules (CR, LF and CRLF lines, a BOM, comments, multi-line data,
events split anywhere between chunks), retries a 503, reconnects a stalled stream with a
fresh token and exactly after the last event ID, stops at the job's end or at a 204, and
survives a callback that throws; ``watchJobs`` reads many jobs on one stream the same way and
ends once every job has; ``watchMine`` with ``acrossTabs`` has two tabs share one stream, the
joining one handed what the holder saw (capped), then taking the stream over exactly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page

from jobprogress_testing import free_port

MODULE = Path(__file__).resolve().parents[1] / "web" / "jobprogress.js"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>module</title>
<script type="module">
import { watchJob } from "/client/jobprogress.js";
const params = new URL(location.href).searchParams;
let tokens = 0;
Object.assign(window, { seen: [], states: [], errors: [] });
window.handle = watchJob(params.get("job"), {
  lastEventId: params.get("after") || undefined,
  getToken: async () => `t${++tokens}`,
  retryMs: 20,
  stallTimeoutMs: 500,
  on: {
    progress: () => { throw new Error("a callback of the page that throws"); },
    any: (data, event) => window.seen.push([event.id, event.type, data]),
  },
  onState: (state) => window.states.push(state),
  onError: (error) => window.errors.push([error.status, error.code, error.fatal]),
});
</script></head><body>module</body></html>
"""

#: The second connect's bytes, cut in awkward places: inside "\r\n", inside a field name,
#: between the two lines of one event's data, inside a character's UTF-8 bytes.
CHUNKS = [
    "\ufeffretry: 30\r".encode(),
    b"\n\r\n: a comment\r\nid: 1-0\r\nev",
    b'ent: progress\r\ndata: {"progress":',
    b"\r\ndata: 25}\r\n",
    '\r\nid: 2-0\nevent: log\ndata: {"line":"café ☕'.encode()[:-1],
    '☕"}\n\n'.encode()[2:],
    b"event: nothing-without-data\n\n",
]
#: The third: a reset (no id: the last ID stays 2-0), then the end, with CR-only lines.
THIRD = 'event: reset\rdata: {"status":"PROCESSING"}\r\rid: 3-0\revent: complete\rdata: {"result":"ok"}\r\r'


#: Many jobs on one stream: the first connect drops after job a's end; the second, asked for
#: what follows the compound ID J1, brings job b's end.
MANY = [
    b'retry: 20\n\nid: J0\nevent: log\ndata: {"jobId":"a","line":"a1"}\n\n'
    b'id: J1\nevent: complete\ndata: {"jobId":"a","result":"A"}\n\n',
    b'id: J2\nevent: log\ndata: {"jobId":"b","line":"b1"}\n\n'
    b'id: J3\nevent: failed\ndata: {"jobId":"b","error":"B"}\n\n',
]

MANY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>many</title>
<script type="module">
import { watchJobs } from "/client/jobprogress.js";
Object.assign(window, { seen: [], states: [] });
window.handle = watchJobs(["a", "b"], {
  token: "t",
  retryMs: 20,
  on: { any: (data, event) => window.seen.push([event.id, event.type, data.jobId]) },
  onState: (state) => window.states.push(state),
});
</script></head><body>many</body></html>
"""

MINE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mine</title>
<script type="module">
import { watchMine } from "/client/jobprogress.js";
Object.assign(window, { seen: [], replays: 0 });
window.handle = watchMine({
  acrossTabs: "user-1",
  token: "t",
  retryMs: 20,
  on: { any: (data, event) => window.seen.push([event.id, event.type, data]) },
  onReplay: () => Object.assign(window, { seen: [], replays: window.replays + 1 }),
});
</script></head><body>mine</body></html>
"""
QUEUED = {"jobId": "a", "status": "QUEUED"}
#: The first connect: job a's status and 1,001 log lines (more than a tab keeps of a job).
MINE_FIRST = (
    "retry: 20\n\nid: M0\nevent: status\ndata: "
    + json.dumps(QUEUED)
    + "\n\n"
    + "".join(f'id: M{n}\nevent: log\ndata: {{"jobId":"a","line":"l{n}"}}\n\n' for n in range(1, 1002))
)
MINE_SECOND = 'id: M1002\nevent: complete\ndata: {"jobId":"a","status":"COMPLETED"}\n\n'


class Script:
    """A stand-in for progress-service that answers each connect as the test says."""

    def __init__(self) -> None:
        self.requests: list[tuple[str | None, str | None]] = []
        self.mine_requests: list[str | None] = []

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def many_page(self, request: web.Request) -> web.Response:
        return web.Response(text=MANY_PAGE, content_type="text/html")

    async def many(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.query.get("lastEventId"), ",".join(request.query.getall("job"))))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(MANY[len(self.requests) - 1])
        return response  # the server ends the stream: the client reconnects, or has seen all

    async def mine_page(self, request: web.Request) -> web.Response:
        return web.Response(text=MINE_PAGE, content_type="text/html")

    async def mine(self, request: web.Request) -> web.StreamResponse:
        self.mine_requests.append(request.query.get("lastEventId"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write((MINE_FIRST if len(self.mine_requests) == 1 else MINE_SECOND).encode())
        await asyncio.Event().wait()  # open until the tab goes
        return response

    async def module(self, request: web.Request) -> web.Response:
        return web.Response(text=MODULE.read_text(), content_type="text/javascript")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.query.get("lastEventId"), request.headers.get("Authorization")))
        if request.match_info["job_id"] == "ended":
            return web.Response(status=204)
        attempt = len(self.requests)
        if attempt == 1:
            error = {"error": {"code": "unavailable", "message": "try again", "details": {}}}
            return web.json_response(error, status=503, headers={"Retry-After": "0"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in CHUNKS if attempt == 2 else [THIRD.encode()]:
            await response.write(chunk)
            await asyncio.sleep(0.02)
        # Silence, until the client's stall watchdog (or its stop after the end) closes the
        # connection, which cancels this handler.
        await asyncio.Event().wait()
        return response


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, Script]]:
    script = Script()
    app = web.Application()
    app.router.add_get("/page.html", script.page)
    app.router.add_get("/client/jobprogress.js", script.module)
    app.router.add_get("/api/progress/mine", script.mine)
    app.router.add_get("/api/progress/{job_id}", script.stream)
    app.router.add_get("/mine.html", script.mine_page)
    app.router.add_get("/many.html", script.many_page)
    app.router.add_get("/api/progress", script.many)
    runner = web.AppRunner(app, shutdown_timeout=1, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", script
    await runner.cleanup()


async def value(page: Page, expression: str) -> Any:
    return await page.evaluate(expression)


async def test_the_module_reads_sse_by_the_rules_and_resumes_exactly(
    page: Page, origin: tuple[str, Script]
) -> None:
    url, script = origin
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    await page.goto(f"{url}/page.html?job=j1")
    assert await value(page, "window.handle.done") == "complete"
    assert await value(page, "window.seen") == [
        ["1-0", "progress", {"progress": 25}],
        ["2-0", "log", {"line": "café ☕"}],
        ["2-0", "reset", {"status": "PROCESSING"}],
        ["3-0", "complete", {"result": "ok"}],
    ]
    # The 503 was retried, the stalled stream reconnected after 2-0; a fresh token each time.
    assert script.requests == [(None, "Bearer t1"), (None, "Bearer t2"), ("2-0", "Bearer t3")]
    assert await value(page, "window.errors") == [[503, "unavailable", False]]
    assert await value(page, "window.states") == [
        "connecting", "reconnecting", "live", "reconnecting", "live", "closed",
    ]  # fmt: skip
    assert await value(page, "window.handle.lastEventId") == "3-0"
    assert page_errors == ["a callback of the page that throws"]  # reported, and it went on


async def test_a_204_ends_the_watch(page: Page, origin: tuple[str, Script]) -> None:
    url, script = origin
    await page.goto(f"{url}/page.html?job=ended&after=9-0")
    assert await value(page, "window.handle.done") == "ended"
    assert await value(page, "window.states") == ["connecting", "closed"]
    assert await value(page, "window.errors") == []
    assert script.requests == [("9-0", "Bearer t1")]


async def test_many_jobs_on_one_stream_resume_by_the_compound_id_and_end_with_the_last(
    page: Page, origin: tuple[str, Script]
) -> None:
    url, script = origin
    await page.goto(f"{url}/many.html")
    assert await value(page, "window.handle.done") == "ended"
    assert await value(page, "window.seen") == [
        ["J0", "log", "a"], ["J1", "complete", "a"], ["J2", "log", "b"], ["J3", "failed", "b"],
    ]  # fmt: skip
    # Job a's end did not end the watch; the reconnect asked for what follows J1, for both jobs.
    assert script.requests == [(None, "a,b"), ("J1", "a,b")]
    assert await value(page, "window.states") == ["connecting", "live", "reconnecting", "live", "closed"]
    assert await value(page, "window.handle.jobIds") == ["a", "b"]


async def test_two_tabs_share_one_stream_of_mine_and_the_second_takes_it_over(
    page: Page, origin: tuple[str, Script]
) -> None:
    url, script = origin
    await page.goto(f"{url}/mine.html")
    await page.wait_for_function("window.seen.length === 1002")
    assert await value(page, "window.handle.role") == "holder"
    second = await page.context.new_page()
    await second.goto(f"{url}/mine.html")
    await second.wait_for_function("window.seen.length === 1000")
    # Handed what the holder saw, the oldest events folded into a reset with the job's state.
    seen = await value(second, "window.seen")
    assert seen[0] == ["M2", "reset", QUEUED]
    assert seen[1:] == [[f"M{n}", "log", {"jobId": "a", "line": f"l{n}"}] for n in range(3, 1002)]
    assert await value(second, "[window.replays, window.handle.role]") == [1, "follower"]
    assert script.mine_requests == [None]  # the second tab opened no stream

    await page.close()  # the holder goes: the second tab resumes after the last event it had
    await second.wait_for_function("window.seen.length === 1001")
    completed = {"jobId": "a", "status": "COMPLETED"}
    assert (await value(second, "window.seen"))[-1] == ["M1002", "complete", completed]
    assert await value(second, "[window.handle.role, window.handle.lastEventId]") == ["holder", "M1002"]
    assert script.mine_requests == [None, "M1001"]
