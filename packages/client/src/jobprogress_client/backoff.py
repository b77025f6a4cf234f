"""Waiting longer after each failure in a row: one helper for every retry loop.

A loop that retries a dependency (a Redis read, a Consul lookup, a reporter's request)
sleeps ``first`` seconds after its first failure, twice as long after each further one up
to ``cap``, and starts again from ``first`` once a call works. It lives in the client, which
needs it too and depends on aiohttp only; the services import it from here::

    backoff = Backoff(first=0.1, cap=5.0)
    while True:
        try:
            await read()
        except REDIS_ERRORS as exc:
            logger.warning("read failed (%s); retrying in %.1fs", exc, backoff.delay)
            await backoff.sleep()
        else:
            backoff.reset()
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Exponential delays between retries: ``first``, doubled each time, at most ``cap``."""

    first: float
    cap: float
    delay: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"need 0 < first <= cap, got first={self.first} cap={self.cap}")
        self.delay = self.first

    def next(self) -> float:
        """The delay to wait now; the one after it is twice as long (up to ``cap``)."""
        delay = self.delay
        self.delay = min(delay * 2, self.cap)
        return delay

    async def sleep(self) -> None:
        """Wait the current delay, and lengthen the next one."""
        await asyncio.sleep(self.next())

    def reset(self) -> None:
        """A call worked: the next failure waits ``first`` again."""
        self.delay = self.first
