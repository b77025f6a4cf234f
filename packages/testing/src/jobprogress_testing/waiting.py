"""Waiting for what another process writes: a condition polled until a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually"]

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, *, timeout: float = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(
    check: Callable[[], T | None], what: str, *, timeout: float = ..., interval: float = ...
) -> T: ...
async def eventually(
    check: Callable[[], Any], what: str, *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Wait for ``check()`` (a function or a coroutine function) to return something true,
    and return it; fail naming ``what`` and the last value after ``timeout`` seconds. A check
    that raises fails at once: what it raised is the test's failure.

    Whatever another process writes (a log line, a metric, a key) shows up some time after
    the event a test saw last: read it through this, never right after that event."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last: {result!r})")
        await asyncio.sleep(interval)
