"""The README's backend snippets of "Embedding jobprogress in your product", run as they are
written against a stack that accepts the product's tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobprogress_client import ApiError, collect_events
from jobprogress_testing import TEST_ENV, Stack

pytestmark = pytest.mark.stack

README = Path(__file__).resolve().parents[1] / "README.md"
SECRET = "the-readme-products-secret-of-32-chars-at-least"


def backend_blocks() -> str:
    section = README.read_text().split("### The backend: sign a token, submit or report", 1)[1]
    section = section.split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3, "the README's backend section has its three snippets"
    return "\n\n".join(blocks)


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("readme"), env={**TEST_ENV, "JOBPROGRESS_APP_JWT_SECRET": SECRET})
    with stack.running():
        for service in ("job-queue-service", "worker-service", "progress-service"):
            stack.start_service(service)
        yield stack


@pytest.fixture
def snippets(product: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("JOBPROGRESS_APP_JWT_SECRET", SECRET)
    monkeypatch.setenv("JOBPROGRESS_URL", product.url("progress-service"))
    namespace: dict[str, Any] = {}
    exec(compile(backend_blocks(), str(README), "exec"), namespace)
    return namespace


async def events_as(snippets: dict[str, Any], user: str, job_id: str) -> list[Any]:
    token = snippets["jobprogress_token"](user)  # a read token, as the page gets it
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        return await collect_events(http, f"{snippets['JOBPROGRESS_URL']}/api/progress/{job_id}", timeout=60)


async def test_the_backend_submits_for_its_user_and_the_user_watches(snippets: dict[str, Any]) -> None:
    job_id = await snippets["start_report"]("ann")
    events = await events_as(snippets, "ann", job_id)
    assert events[-1].event == "complete"
    with pytest.raises(ApiError, match="HTTP 404"):
        await events_as(snippets, "someone-else", job_id)


async def test_the_backend_runs_a_job_itself_and_reports_it(snippets: dict[str, Any]) -> None:
    job_id = await snippets["import_rows"]("ann", ["a.csv", "b.csv"])
    events = await events_as(snippets, "ann", job_id)
    assert [e.data["line"] for e in events if e.event == "log"] == ["imported a.csv", "imported b.csv"]
    assert [e.data["step"] for e in events if e.event == "progress"] == [1, 2]
    assert (events[-1].event, events[-1].data["result"]) == ("complete", "2 rows imported")
