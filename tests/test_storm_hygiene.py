"""A reconnect storm on one progress-service process with a small setup rate: the streams
it lets in are each told their own ``retry:`` within the configured range, the rest get a
JSON 503 with a spread-out ``Retry-After`` (and are counted), and every client that comes
back when told to gets the job's whole log exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from jobprogress_client.sse import read_messages
from jobprogress_testing import TEST_ENV, Stack, eventually

pytestmark = pytest.mark.stack

CLIENTS = 30
RATE = 5
RETRY_MS = (1000, 4000)
TERMINAL = {"complete", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stormy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        **TEST_ENV,
        "JOBPROGRESS_SSE_SETUPS_PER_SECOND": str(RATE),
        "JOBPROGRESS_SSE_RETRY_MS": str(RETRY_MS[0]),
        "JOBPROGRESS_SSE_RETRY_MAX_MS": str(RETRY_MS[1]),
    }
    stack = Stack(tmp_path_factory.mktemp("storm"), env=env)
    with stack.running():
        for service in ("job-queue-service", "progress-service"):
            stack.start_service(service)
        yield stack


class Client:
    """One viewer that does what EventSource-like clients of ours do on a 503: wait the
    ``Retry-After``, then connect again."""

    def __init__(self) -> None:
        self.waits: list[int] = []  # each Retry-After it was given
        self.refusals: list[dict[str, Any]] = []
        self.retry: int | None = None  # the retry: of the stream it got
        self.events: list[tuple[str, str]] = []

    async def watch(self, http: aiohttp.ClientSession, url: str, first_try: asyncio.Event) -> None:
        while True:
            async with http.get(url) as response:
                if response.status == 503:
                    self.waits.append(int(response.headers["Retry-After"]))
                    self.refusals.append(await response.json())
                else:
                    assert response.status == 200, await response.text()
                    first_try.set()
                    async for message in read_messages(response):
                        self.retry = message.retry if message.retry is not None else self.retry
                        if message.event is not None and message.id is not None:
                            self.events.append((message.id, message.event))
                            if message.event in TERMINAL:
                                return
                    raise AssertionError("the stream ended before the job did")
            first_try.set()
            await asyncio.sleep(self.waits[-1])


async def test_requests_with_a_bad_token_do_not_spend_the_setups(
    stormy_stack: Stack, jobprogress_http: aiohttp.ClientSession
) -> None:
    """First in this module: the instance has just started, its second's worth of setups
    (``RATE``) untouched. Many requests whose token does not verify are refused 401 before
    the cap; the next ``RATE`` well-signed ones are all let through (to a 404: no such job)."""
    url = f"{stormy_stack.url('progress-service')}/api/progress/no-such-job"
    forged = {"Authorization": "Bearer not.a.token"}
    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(status_of(http, url, forged) for _ in range(4 * RATE)))
    assert set(statuses) == {401}
    assert await asyncio.gather(*(status_of(jobprogress_http, url) for _ in range(RATE))) == [404] * RATE


async def status_of(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> int:
    async with http.get(url, headers=headers) as response:
        return response.status


async def test_a_storm_is_spread_and_capped_and_everyone_gets_everything_once(
    stormy_stack: Stack, jobprogress_http: aiohttp.ClientSession
) -> None:
    queue, progress = stormy_stack.url("job-queue-service"), stormy_stack.url("progress-service")
    async with jobprogress_http.post(
        f"{queue}/api/jobs", json={"runner": "external", "steps": 3}
    ) as response:
        assert response.status == 202, await response.text()
        job = await response.json()
    url = f"{progress}/api/progress/{job['jobId']}"
    clients = [Client() for _ in range(CLIENTS)]
    started = time.monotonic()
    tried = [asyncio.Event() for _ in clients]
    watching = [
        asyncio.create_task(client.watch(jobprogress_http, url, event))
        for client, event in zip(clients, tried, strict=True)
    ]
    async with asyncio.timeout(30):
        await asyncio.gather(*(event.wait() for event in tried))
    # A second's worth at once, then the rate: however slowly the first tries arrived.
    admitted_at_once = sum(not client.waits for client in clients)
    assert admitted_at_once <= RATE * (1 + time.monotonic() - started) < CLIENTS

    reporter = {"Authorization": f"Bearer {job['reporterToken']}"}
    events = [{"type": "log", "line": f"line {n}"} for n in range(5)] + [{"type": "complete", "result": "ok"}]
    async with aiohttp.ClientSession() as http:
        report = http.post(
            f"{queue}/api/jobs/{job['jobId']}/events", json={"events": events}, headers=reporter
        )
        async with report as response:
            assert response.status == 200, await response.text()
    async with asyncio.timeout(120):
        await asyncio.gather(*watching)

    log = clients[0].events
    assert [kind for _, kind in log][-6:] == ["log"] * 5 + ["complete"]
    for client in clients:
        assert client.events == log  # the whole log, exactly once, whenever it got in
        assert client.retry is not None and RETRY_MS[0] <= client.retry <= RETRY_MS[1]
        assert all(1 <= wait <= 4 for wait in client.waits)
        assert all(refusal["error"]["code"] == "service_unavailable" for refusal in client.refusals)
    assert len({client.retry for client in clients}) > 1  # each stream its own retry:
    waits = [wait for client in clients for wait in client.waits]
    assert len(set(waits)) > 1  # and the refused are not all sent back at the same moment

    async def counted() -> float | None:
        async with jobprogress_http.get(f"{progress}/metrics") as response:
            text = await response.text()
        found = [
            line for line in text.splitlines() if line.startswith("jobprogress_sse_setups_refused_total ")
        ]
        value = float(found[0].split()[1]) if found else None
        return value if value == len(waits) else None

    await eventually(counted, f"{len(waits)} refusals counted")
