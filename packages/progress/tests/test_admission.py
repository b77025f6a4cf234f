"""Stream admission: a second's worth of setups, then that many a second, the rest told to
come back at spread-out times; and each stream's own ``retry:``."""

from __future__ import annotations

import random
import re

import pytest

from jobprogress_core.errors import ServiceUnavailable
from progress_service.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admitted(admission: Admission, tries: int) -> list[int | None]:
    """For each try, ``None`` when let in, else its ``Retry-After`` in seconds."""
    outcomes: list[int | None] = []
    for _ in range(tries):
        try:
            admission.admit()
        except ServiceUnavailable as refused:
            outcomes.append(int(refused.headers["Retry-After"]))
        else:
            outcomes.append(None)
    return outcomes


def test_a_burst_of_a_seconds_worth_then_that_rate() -> None:
    clock = Clock()
    admission = Admission(10, (2000, 5000), clock=clock, rng=random.Random(7))
    first = admitted(admission, 30)
    assert first[:10] == [None] * 10
    waits = first[10:]
    assert all(wait is not None and 2 <= wait <= 5 for wait in waits)
    assert len(set(waits)) > 1  # spread out, not all back at once
    clock.now += 0.5  # half a second refills half a second's worth
    half = admitted(admission, 6)
    assert half[:5] == [None] * 5 and half[5] is not None
    clock.now += 60  # a long quiet time refills one second's worth, no more
    assert admitted(admission, 11).count(None) == 10


def test_each_stream_is_told_its_own_retry_within_the_range() -> None:
    admission = Admission(10, (3000, 6000), rng=random.Random(1))
    delays = [int(re.fullmatch(rb"retry: (\d+)\n\n", admission.retry_frame())[1]) for _ in range(500)]
    assert min(delays) >= 3000 and max(delays) <= 6000
    assert max(delays) - min(delays) > 2000  # spread over the range
    assert Admission(10, (3000, 3000)).retry_frame() == b"retry: 3000\n\n"


@pytest.mark.parametrize(("retry_ms", "waits"), [((100, 900), {1}), ((1000, 1001), {1, 2})])
def test_retry_after_is_whole_seconds_of_at_least_one(retry_ms: tuple[int, int], waits: set[int]) -> None:
    admission = Admission(1, retry_ms, clock=Clock(), rng=random.Random(3))
    assert admitted(admission, 1) == [None]
    assert set(admitted(admission, 200)) == waits
