"""The reporter's retries: a batch sent again while the service is away or busy, with
delays doubling from 0.2 s up to 5 s (a ``Retry-After`` waited instead, the delays going on
doubling), then given up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import aiohttp
import pytest

from jobprogress_client import reporter as reporter_module
from jobprogress_client.api import ApiError
from jobprogress_client.reporter import Reporter


class Answer:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}

    async def json(self, content_type: str | None = None) -> dict[str, Any]:
        return {"cancelRequested": True} if self.status == 200 else {"error": "busy"}

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class Service:
    """Answers each POST with the next of ``answers``."""

    def __init__(self, *answers: Answer) -> None:
        self.answers: Iterator[Answer] = iter(answers)

    def post(self, url: str, **kwargs: Any) -> Answer:
        return next(self.answers)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the reporter waits, waited at once."""
    waited: list[float] = []

    async def sleep(delay: float) -> None:
        waited.append(delay)

    monkeypatch.setattr(reporter_module.asyncio, "sleep", sleep)
    return waited


def reporter(*answers: Answer) -> Reporter:
    http = cast(aiohttp.ClientSession, Service(*answers))
    return Reporter(http, "http://service", "job", "token")


async def test_delays_double_from_a_fifth_of_a_second_up_to_five(waits: list[float]) -> None:
    busy = [Answer(503) for _ in range(7)]
    sender = reporter(*busy, Answer(200))
    await sender.send([{"type": "log", "line": "x"}])
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert sender.requests == 8 and sender.cancel_requested


async def test_a_retry_after_is_waited_and_the_delays_go_on_doubling(waits: list[float]) -> None:
    sender = reporter(Answer(502), Answer(429, {"Retry-After": "3"}), Answer(504), Answer(200))
    await sender.send([{"type": "log", "line": "x"}])
    assert waits == [0.2, 3.0, 0.8]


async def test_each_batch_starts_from_the_first_delay(waits: list[float]) -> None:
    sender = reporter(Answer(503), Answer(200), Answer(503), Answer(200))
    await sender.send([{"type": "log", "line": "x"}])
    await sender.send([{"type": "log", "line": "y"}])
    assert waits == [0.2, 0.2]


async def test_a_refusal_is_not_retried(waits: list[float]) -> None:
    with pytest.raises(ApiError):
        await reporter(Answer(400)).send([{"type": "log", "line": "x"}])
    assert waits == []
