"""Our Redis connections (``CancellableSend``): one cancellation ends a task in the middle
of a command, and a send that cannot finish fails as a Redis timeout."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from jobprogress_core.redis import REDIS_ERRORS, create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import RedisServer


async def test_one_cancellation_ends_a_task_in_the_middle_of_redis_commands(
    jobprogress_store: JobStore,
) -> None:
    """redis-py's own send (``asyncio.wait_for``) lost about one cancellation in twenty here;
    our connections send under ``asyncio.timeout``, and not one is lost."""
    redis = jobprogress_store.redis

    async def commands() -> None:
        while True:
            await redis.hget("test-tasks", "field")

    rng = random.Random(1)
    for n in range(300):
        task = asyncio.create_task(commands())
        await asyncio.sleep(rng.random() * 0.005)
        task.cancel()
        await asyncio.wait([task], timeout=5)
        assert task.cancelled(), f"cancellation {n} was lost"


async def test_a_send_that_cannot_finish_fails_as_a_redis_timeout(
    tmp_path: Path, jobprogress_settings: Callable[..., Settings]
) -> None:
    """A Redis of its own, stopped (SIGSTOP) once connected: a big command fills the socket."""
    server = RedisServer(tmp_path)
    server.start()
    redis = create_redis(jobprogress_settings(REDIS_URL=server.url, JOBPROGRESS_REDIS_TIMEOUT="0.5"))
    try:
        assert await redis.ping()
        connection = await redis.connection_pool.get_connection()
        server.signal(signal.SIGSTOP)
        with pytest.raises(REDIS_ERRORS, match="Timeout writing"):
            await connection.send_command("SET", "key", "x" * 50_000_000)
        assert connection.socket_timeout == 0.5  # as it was
        server.signal(signal.SIGCONT)
        await redis.connection_pool.release(connection)
        assert await redis.ping()  # a fresh connection: the timed-out one was dropped
    finally:
        server.signal(signal.SIGCONT)
        await redis.aclose()
        server.stop()
