"""Cancelling tasks so that they really end.

A task's code can lose a cancellation: on Python 3.11, ``asyncio.wait_for`` returns the
result of what it waited for, instead of raising, when the cancellation lands just as that
completes (CPython gh-86296, fixed in 3.12). Our own code never calls it (ruff bans it), and
our Redis connections do not go through redis-py's (:class:`jobprogress_core.redis.
CancellableSend`), but a job handler, or a library, may: so a task that must end is
cancelled again while it runs on.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Seconds between cancellations of a task that is still running.
RETRY_SECONDS = 0.05


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel every task, again while it still runs, until all have ended. What they
    raised is left in them (``task.exception()``, or ``asyncio.gather(...,
    return_exceptions=True)``, which now answers at once)."""
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=RETRY_SECONDS)
