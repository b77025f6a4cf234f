"""StreamReader on a real redis-server: the same entries as the client, one held
connection, and a clean restart after a read is cut short."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from jobprogress_core.redis import REDIS_ERRORS, StreamReader, create_redis, stream_entries
from jobprogress_core.settings import Settings
from jobprogress_testing import eventually


@pytest.fixture
async def reader(jobprogress_settings: Callable[..., Settings]) -> AsyncIterator[StreamReader]:
    settings = jobprogress_settings("progress-service")
    redis = create_redis(settings, block_ms=2000, max_connections=1, role=f"test-{uuid.uuid4().hex[:8]}")
    yield StreamReader(redis)
    await redis.aclose()


@pytest.fixture
async def redis(jobprogress_settings: Callable[..., Settings]) -> AsyncIterator[Redis]:
    """A client of its own for everything but the reads: the reader holds its pool's one
    connection."""
    client = create_redis(jobprogress_settings("progress-service"))
    yield client
    await client.aclose()


def keys(count: int) -> list[str]:
    run = uuid.uuid4().hex
    return [f"test:reader:{run}:{n}" for n in range(count)]


async def blocked_in_redis(reader: StreamReader, redis: Redis) -> None:
    """Wait until Redis has the reader's XREAD and blocks on it (the read task has sent it)."""
    name = reader.redis.connection_pool.connection_kwargs["client_name"]

    async def blocked() -> bool:
        clients = await redis.client_list()
        return any(client["name"] == name and "b" in client["flags"] for client in clients)

    await eventually(blocked, "the reader's XREAD blocked in Redis", timeout=1.5)


async def test_entries_match_the_client_reply(reader: StreamReader, redis: Redis) -> None:
    first, second, untouched = keys(3)
    for n in range(3):
        await redis.xadd(first, {"type": "log", "data": f'{{"line":"é {n}"}}'})
    await redis.xadd(second, {"type": "progress", "data": "{}", "extra": ""})
    streams: dict[Any, Any] = {first: "0-0", second: "0-0", untouched: "0-0"}

    got = await reader.xread(streams, block_ms=100, count=10)

    assert got == stream_entries(await redis.xread(dict(streams), count=10))
    assert [stream for stream, _ in got] == [first, second]
    assert got[0][1][2][1] == {"type": "log", "data": '{"line":"é 2"}'}
    assert got[1][1][0][1] == {"type": "progress", "data": "{}", "extra": ""}


async def test_count_and_cursor_are_honoured(reader: StreamReader, redis: Redis) -> None:
    [stream] = keys(1)
    ids = [str(await redis.xadd(stream, {"n": str(n)})) for n in range(5)]

    [(_, page)] = await reader.xread({stream: ids[1]}, block_ms=100, count=2)

    assert [entry_id for entry_id, _ in page] == ids[2:4]


async def test_nothing_new_is_an_empty_list_after_the_block(reader: StreamReader) -> None:
    [stream] = keys(1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    assert await reader.xread({stream: "$"}, block_ms=200, count=10) == []
    assert loop.time() - started >= 0.15


async def test_a_blocked_read_wakes_on_a_new_entry(reader: StreamReader, redis: Redis) -> None:
    [stream] = keys(1)
    read = asyncio.create_task(reader.xread({stream: "$"}, block_ms=1900, count=10))
    await blocked_in_redis(reader, redis)  # else the entry would come before the "$" it follows
    added = await redis.xadd(stream, {"n": "1"})

    async with asyncio.timeout(1.5):
        [(_, [(entry_id, fields)])] = await read

    assert (entry_id, fields) == (added, {"n": "1"})


async def test_reads_keep_one_named_connection(reader: StreamReader, redis: Redis) -> None:
    [stream] = keys(1)
    name = reader.redis.connection_pool.connection_kwargs["client_name"]
    seen = set()
    for n in range(20):
        await redis.xadd(stream, {"n": str(n)})
        assert await reader.xread({stream: "0-0"}, block_ms=10, count=1)
        seen |= {client["id"] for client in await redis.client_list() if client["name"] == name}
    assert len(seen) == 1


async def test_a_read_cut_short_fails_and_the_next_one_reconnects(reader: StreamReader, redis: Redis) -> None:
    [stream] = keys(1)
    read = asyncio.create_task(reader.xread({stream: "$"}, block_ms=1900, count=10))
    await blocked_in_redis(reader, redis)
    await reader.redis.connection_pool.disconnect()  # what stop_reader does

    with pytest.raises(REDIS_ERRORS):
        async with asyncio.timeout(1.5):
            await read

    added = await redis.xadd(stream, {"n": "1"})
    [(_, [(entry_id, _)])] = await reader.xread({stream: "0-0"}, block_ms=10, count=10)
    assert entry_id == added


async def test_a_cancelled_read_leaves_no_reply_behind(reader: StreamReader, redis: Redis) -> None:
    [stream] = keys(1)
    read = asyncio.create_task(reader.xread({stream: "$"}, block_ms=1900, count=10))
    await blocked_in_redis(reader, redis)  # cancelled while Redis holds the read
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read

    # Had its connection stayed open, the cancelled read would now be answered with the first
    # entry, and that reply taken for the next read's.
    first = await redis.xadd(stream, {"n": "1"})
    second = await redis.xadd(stream, {"n": "2"})
    next_read = reader.xread({stream: str(first)}, block_ms=10, count=10)
    async with asyncio.timeout(3):
        [(_, [(entry_id, _)])] = await next_read
    assert entry_id == second
