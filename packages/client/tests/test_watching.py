"""How long ``jobprogress watch`` waits when told to come back later."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from jobprogress_client.watching import retry_after


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("86400", 3600.0),
        (None, 5.0),
        ("soon", 5.0),
        ("nan", 5.0),
        ("", 5.0),
    ],
)
def test_retry_after_in_seconds(value: str | None, seconds: float) -> None:
    assert retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    assert 25 <= retry_after(formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0
