"""Limits on a real redis-server: the GCRA's burst and pace, and stream leases that are
released, renewed, and never brought back by a renewal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from jobprogress_core.errors import TooManyRequests
from jobprogress_core.keys import Keys
from jobprogress_core.limits import RateLimit, StreamLeases
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings


@pytest.fixture
async def redis(jobprogress_settings: Callable[..., Settings]) -> AsyncIterator[Redis]:
    client = create_redis(jobprogress_settings())
    yield client
    await client.aclose()


def keys() -> Keys:
    return Keys(prefix=f"test:{uuid.uuid4().hex[:8]}:")


# The limits run on Redis's clock: each check that a hit is refused has a second or more of
# room before the next one would come due, so a stall of the machine cannot make it pass.


async def test_a_burst_of_the_limit_then_an_even_pace(redis: Redis) -> None:
    limit = RateLimit(redis, keys(), "submit", limit=3, period=4.5)  # one per 1.5 s
    for _ in range(3):
        await limit.hit("someone", "tries")
    with pytest.raises(TooManyRequests) as refused:
        await limit.hit("someone", "tries")
    assert refused.value.headers["Retry-After"] == "2" and refused.value.status == 429
    await limit.hit("someone else", "tries")  # subjects are counted apart
    await asyncio.sleep(1.55)
    await limit.hit("someone", "tries")  # one more has come due
    with pytest.raises(TooManyRequests):
        await limit.hit("someone", "tries")


async def test_refused_hits_do_not_push_the_next_one_back(redis: Redis) -> None:
    limit = RateLimit(redis, keys(), "submit", limit=1, period=1.5)
    await limit.hit("s", "tries")
    for _ in range(20):
        with pytest.raises(TooManyRequests):
            await limit.hit("s", "tries")
    await asyncio.sleep(1.55)
    await limit.hit("s", "tries")


async def test_leases_count_open_streams_and_a_released_one_stays_released(redis: Redis) -> None:
    space = keys()
    leases = StreamLeases(redis, space, limit=2, lease_seconds=30)
    async with leases.hold("me"), leases.hold("me"):
        with pytest.raises(TooManyRequests):
            async with leases.hold("me"):
                pass
        async with leases.hold("you"):
            assert await redis.zcard(space.stream_leases("me")) == 2
    assert await redis.zcard(space.stream_leases("me")) == 0

    # A renewal that raced with a release (the lease in its snapshot, gone from Redis).
    async with leases.hold("me") as lease:
        snapshot = set(leases.held)
    leases.held = snapshot
    await leases.renew()
    assert await redis.zscore(space.stream_leases("me"), lease.member) is None
    leases.held = set()


async def test_renewal_keeps_a_lease_past_its_first_term(redis: Redis) -> None:
    space = keys()
    leases = StreamLeases(redis, space, limit=1, lease_seconds=1.5)
    async with leases.hold("me") as lease:
        for _ in range(3):  # each renewal with a second to spare
            await asyncio.sleep(0.5)
            await leases.renew()
        await asyncio.sleep(0.5)  # 2 s since it was taken: past its first term, a second to spare
        assert await redis.zscore(space.stream_leases("me"), lease.member) is not None
        with pytest.raises(TooManyRequests):
            async with leases.hold("me"):
                pass
    # An instance that died renews nothing: its leases lapse by themselves.
    dead = StreamLeases(redis, space, limit=1, lease_seconds=0.3)
    async with dead.hold("me"):
        pass
    await dead._take(type(lease)("me", "dead:stream"), 1)
    await asyncio.sleep(0.4)
    async with leases.hold("me"):
        pass
