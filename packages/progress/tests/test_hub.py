"""The fan-out hub on a real redis-server: one reader, the log/live seam, bounded buffers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from jobprogress_core.model import Event, EventType, Job
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from progress_service.hub import Closed, Hub, Overflowed


async def new_job(store: JobStore) -> str:
    job = Job.new("build", {}, owner="o")
    await store.create(job, {"status": "QUEUED"})
    return job.id


@pytest.fixture
async def hub(
    jobprogress_store: JobStore, jobprogress_settings: Callable[..., Settings]
) -> AsyncIterator[Hub]:
    reader = create_redis(jobprogress_settings(), block_ms=5000, max_connections=1)
    hub = Hub(jobprogress_store, reader, jobprogress_store.keys, block_ms=5000, queue_size=8)
    task = asyncio.create_task(hub.run())
    yield hub
    await hub.stop(task)
    assert task.done()


async def next_events(subscription: object, count: int) -> list[Event]:
    events = []
    for _ in range(count):
        event = await subscription.get(timeout=5)  # type: ignore[attr-defined]
        assert event is not None
        events.append(event)
    return events


async def test_log_up_to_cursor_then_live_with_no_gap(jobprogress_store: JobStore, hub: Hub) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    await store.append(job_id, EventType.LOG, {"line": "before"})
    subscription, cursor = await hub.subscribe(job_id)
    # A new stream wakes the reader at once, though its block time is 5 s.
    live = [await store.append(job_id, EventType.LOG, {"line": str(n)}) for n in range(3)]
    received = await asyncio.wait_for(next_events(subscription, 3), 3)
    assert received == live
    assert [e.data.get("line") for e in await store.events(job_id, until=cursor)] == [None, "before"]


async def test_second_subscriber_gets_the_shared_cursor(jobprogress_store: JobStore, hub: Hub) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    first, _ = await hub.subscribe(job_id)
    event = await store.append(job_id, EventType.LOG, {"line": "x"})
    assert await next_events(first, 1) == [event]
    second, cursor = await hub.subscribe(job_id)
    assert cursor == event.id
    later = await store.append(job_id, EventType.LOG, {"line": "y"})
    assert await next_events(first, 1) == await next_events(second, 1) == [later]
    assert hub.subscriber_count == 2
    hub.unsubscribe(first)
    hub.unsubscribe(second)
    assert hub.cursors == {} and hub.subscriber_count == 0


async def test_a_full_buffer_overflows_without_holding_back_others(
    jobprogress_store: JobStore, hub: Hub
) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    slow, _ = await hub.subscribe(job_id)
    fast, _ = await hub.subscribe(job_id)
    received: list[Event] = []
    for n in range(20):
        await store.append(job_id, EventType.LOG, {"line": str(n)})
        received += await next_events(fast, 1)
    assert [e.data["line"] for e in received] == [str(n) for n in range(20)]
    with pytest.raises(Overflowed):
        await slow.get(timeout=1)
    assert slow not in hub.subscribers[job_id]


async def test_close_all_ends_every_subscription(jobprogress_store: JobStore, hub: Hub) -> None:
    job_id = await new_job(jobprogress_store)
    subscription, _ = await hub.subscribe(job_id)
    waiter = asyncio.create_task(subscription.get(timeout=10))
    await asyncio.sleep(0)
    hub.close_all()
    with pytest.raises(Closed):
        await asyncio.wait_for(waiter, 1)


async def test_get_times_out_with_none(jobprogress_store: JobStore, hub: Hub) -> None:
    subscription, _ = await hub.subscribe(await new_job(jobprogress_store))
    assert await subscription.get(timeout=0.05) is None


async def test_each_event_is_decoded_and_encoded_once_for_all_subscribers(
    jobprogress_store: JobStore, hub: Hub
) -> None:
    job_id = await new_job(jobprogress_store)
    subscriptions = [(await hub.subscribe(job_id))[0] for _ in range(5)]
    await jobprogress_store.append(job_id, EventType.LOG, {"line": "shared"})
    received = [(await next_events(subscription, 1))[0] for subscription in subscriptions]
    assert all(event is received[0] for event in received)  # one object, not five copies
    first_bytes = received[0].sse
    assert all(event.sse is first_bytes for event in received)  # encoded once, then reused
