"""How streams are let in, so that a deploy or a network blip does not become a thundering
herd: each stream is told its own reconnection delay (``retry:``, drawn evenly from a
range), and an instance sets up at most so many streams per second, answering the rest
``503`` with a ``Retry-After`` drawn from the same range (in seconds), so that the clients
it turns away come back spread out too.

The rate is a token bucket holding one second's worth: a burst of that many setups, then
that many per second.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from aiohttp import web

from jobprogress_core.errors import ServiceUnavailable

from .frames import retry_frame
from .metrics import SETUPS_REFUSED

__all__ = ["ADMISSION", "Admission"]


class Admission:
    """Stream setups of one instance: at most ``per_second``, each with a ``retry:`` between
    ``retry_ms[0]`` and ``retry_ms[1]`` milliseconds."""

    def __init__(
        self,
        per_second: int,
        retry_ms: tuple[int, int],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.per_second = per_second
        self.retry_ms = retry_ms
        self._clock = clock
        self._rng = rng or random.Random()
        self._tokens = float(per_second)
        self._filled_at = clock()
        low, high = retry_ms
        self._retry_after = (max(1, math.ceil(low / 1000)), max(1, math.ceil(high / 1000)))

    def admit(self) -> None:
        """Take one setup, or raise :class:`ServiceUnavailable` (503) with a spread-out
        ``Retry-After`` when this second's are taken."""
        now = self._clock()
        self._tokens = min(float(self.per_second), self._tokens + (now - self._filled_at) * self.per_second)
        self._filled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return
        SETUPS_REFUSED.inc()
        raise ServiceUnavailable(
            f"This instance sets up at most {self.per_second} streams a second; try again shortly",
            retry_after=self._rng.randint(*self._retry_after),
        )

    def retry_frame(self) -> bytes:
        """The ``retry:`` a new stream starts with: its own draw from the range."""
        return retry_frame(self._rng.randint(*self.retry_ms))


ADMISSION = web.AppKey("admission", Admission)
