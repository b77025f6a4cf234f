"""The fan-out hub on a real redis-server and real TCP connections: one reader, the log/live
seam, bounded buffers, direct writes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from jobprogress_core.model import Event, EventType, Job, dumps
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from progress_service.frames import Frame, http_chunk
from progress_service.hub import Hub
from progress_service.viewer import Ending, Viewer

Connect = Callable[..., Awaitable[tuple[asyncio.Transport, asyncio.StreamReader]]]


async def new_job(store: JobStore) -> str:
    job = Job.new("build", {}, owner="o")
    await store.create(job, {"status": "QUEUED"})
    return job.id


def make_hub(
    store: JobStore, settings: Settings, *, block_ms: int = 5000, role: str = "", **options: int
) -> Hub:
    """A hub whose readers' connections are named ``...:<role>`` (one per partition at most)."""
    reader = create_redis(settings, block_ms=block_ms, max_connections=settings.partitions, role=role)
    return Hub(store, reader, store.keys, block_ms=block_ms, **{"queue_size": 8, **options})


@pytest.fixture
async def hub(
    jobprogress_store: JobStore, jobprogress_settings: Callable[..., Settings]
) -> AsyncIterator[Hub]:
    hub = make_hub(jobprogress_store, jobprogress_settings(), buffer_bytes=1024)
    yield hub
    await hub.stop()
    assert hub.reader_connections == 0


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Real TCP connections on 127.0.0.1: the transport the hub writes to, and a reader of
    what arrives at the other end."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened: list[tuple[asyncio.Transport, asyncio.StreamWriter]] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def open_one(send_buffer: int | None = None) -> tuple[asyncio.Transport, asyncio.StreamReader]:
        transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)
        if send_buffer is not None:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        reader, writer = await accepted.get()
        opened.append((transport, writer))
        return transport, reader

    yield open_one
    for transport, writer in opened:
        transport.close()
        writer.close()
    server.close()
    await server.wait_closed()


async def subscribe(hub: Hub, job_id: str) -> tuple[Viewer, str]:
    """A new viewer of the job in the hub, and the hub's cursor."""
    viewer = Viewer(job_id)
    return viewer, await hub.subscribe(viewer)


async def buffered_frames(subscription: Viewer, count: int, timeout: float = 5) -> list[Frame]:
    """The next ``count`` events the hub buffered for a viewer still catching up."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        while len(frames) < count:
            frame = subscription.pop()
            if frame is None:
                await asyncio.sleep(0.005)
            else:
                frames.append(frame)
    return frames


def frame_of(event: Event | None) -> Frame:
    """An event the store appended, as the hub reads it from the log."""
    assert event is not None
    return Frame(event.id, event.type, dumps(event.data))


async def buffered(subscription: Viewer, count: int, timeout: float = 5) -> list[Event]:
    """The same, decoded (the hub passes the data on as it is) to compare with the store's."""
    frames = await buffered_frames(subscription, count, timeout)
    return [Event.from_entry(f.id, {"type": f.type, "data": f.data}) for f in frames]


async def test_log_up_to_cursor_then_buffered_live_events_with_no_gap(
    jobprogress_store: JobStore, hub: Hub
) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    await store.append(job_id, EventType.LOG, {"line": "before"})
    subscription, cursor = await subscribe(hub, job_id)
    # A new stream wakes the reader at once, though its block time is 5 s.
    live = [await store.append(job_id, EventType.LOG, {"line": str(n)}) for n in range(3)]
    assert await buffered(subscription, 3, timeout=3) == live
    assert [e.data.get("line") for e in await store.events(job_id, until=cursor)] == [None, "before"]


async def test_live_events_are_written_to_the_transport_as_chunks(
    jobprogress_store: JobStore, hub: Hub, connect: Connect
) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    chunked, plain = await connect(), await connect()
    subs = [(await subscribe(hub, job_id))[0] for _ in range(2)]
    hub.go_live(subs[0], chunked[0], chunked=True)
    hub.go_live(subs[1], plain[0], chunked=False)
    log = await store.append(job_id, EventType.LOG, {"line": "x"})
    done = await store.append(job_id, EventType.COMPLETE, {"status": "COMPLETED"})
    for (_, reader), expected in (
        (chunked, http_chunk(log.sse) + http_chunk(done.sse)),
        (plain, log.sse + done.sse),
    ):
        async with asyncio.timeout(3):
            assert await reader.readexactly(len(expected)) == expected
    assert http_chunk(log.sse) == b"%x\r\n%b\r\n" % (len(log.sse), log.sse)
    for subscription in subs:
        assert await subscription.wait(1) == Ending.COMPLETE
        assert subscription.last_id == done.id
    assert hub.subscribers[job_id] == set()  # ended subscriptions leave the hub


async def test_second_subscriber_gets_the_shared_cursor(jobprogress_store: JobStore, hub: Hub) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    first, _ = await subscribe(hub, job_id)
    event = await store.append(job_id, EventType.LOG, {"line": "x"})
    assert await buffered(first, 1) == [event]
    second, cursor = await subscribe(hub, job_id)
    assert cursor == event.id
    later = await store.append(job_id, EventType.LOG, {"line": "y"})
    assert await buffered(first, 1) == await buffered(second, 1) == [later]
    assert hub.subscriber_count == 2
    hub.unsubscribe(first)
    hub.unsubscribe(second)
    assert hub.cursors == {} and hub.subscriber_count == 0


async def test_a_full_catch_up_buffer_overflows_without_holding_back_others(
    jobprogress_store: JobStore, hub: Hub
) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    slow, _ = await subscribe(hub, job_id)
    fast, _ = await subscribe(hub, job_id)
    received: list[Event] = []
    for n in range(20):
        await store.append(job_id, EventType.LOG, {"line": str(n)})
        received += await buffered(fast, 1)
    assert [e.data["line"] for e in received] == [str(n) for n in range(20)]
    assert slow.pop() is None and slow.ending is Ending.OVERFLOW
    assert slow not in hub.subscribers[job_id]


async def test_a_live_client_that_stops_reading_is_cut_loose_and_others_get_everything(
    jobprogress_store: JobStore, hub: Hub, connect: Connect
) -> None:
    store = jobprogress_store
    job_id = await new_job(store)
    stalled_transport, _ = await connect(send_buffer=4096)  # its reader never reads
    reading_transport, reader = await connect()
    stalled, _ = await subscribe(hub, job_id)
    reading, _ = await subscribe(hub, job_id)
    hub.go_live(stalled, stalled_transport, chunked=False)
    hub.go_live(reading, reading_transport, chunked=False)
    line = "z" * 1000
    events = [await store.append(job_id, EventType.LOG, {"line": line, "n": n}) for n in range(400)]
    expected = b"".join(event.sse for event in events)
    async with asyncio.timeout(10):
        assert await reader.readexactly(len(expected)) == expected
    assert await stalled.wait(1) is Ending.OVERFLOW
    # What it was written stays bounded, and it knows where to resume from the log.
    assert stalled_transport.get_write_buffer_size() <= 1024 + len(events[0].sse)
    assert stalled.last_id is not None and stalled.last_id != events[-1].id
    assert hub.subscribers[job_id] == {reading}


async def test_a_client_ahead_of_the_reader_skips_what_it_has(
    jobprogress_store: JobStore, jobprogress_settings: Callable[..., Settings], connect: Connect
) -> None:
    store = jobprogress_store
    hub = make_hub(store, jobprogress_settings())
    job_id = await new_job(store)
    # Subscribed by hand, with no reader started: this test dispatches by hand.
    subscription, cursor = Viewer(job_id), await store.last_event_id(job_id) or "0-0"
    subscription.subscribed()
    hub.cursors[job_id], hub.subscribers[job_id] = cursor, {subscription}
    seen = await store.append(job_id, EventType.LOG, {"line": "seen elsewhere"})
    new = await store.append(job_id, EventType.LOG, {"line": "new"})
    transport, reader = await connect()
    subscription.last_id = seen.id  # ahead of the cursor
    hub.go_live(subscription, transport, chunked=False)
    assert subscription.skip_until == seen.id and hub.cursors[job_id] == cursor
    hub.dispatch(job_id, [frame_of(seen), frame_of(new)], now=0.0)
    async with asyncio.timeout(3):
        assert await reader.readexactly(len(new.sse)) == new.sse
    assert subscription.last_id == new.id and subscription.skip_until is None
    await hub.reader.aclose()


async def test_a_closed_connection_ends_its_subscription(
    jobprogress_store: JobStore, hub: Hub, connect: Connect
) -> None:
    job_id = await new_job(jobprogress_store)
    transport, _ = await connect()
    subscription, _ = await subscribe(hub, job_id)
    hub.go_live(subscription, transport, chunked=True)
    transport.close()
    await jobprogress_store.append(job_id, EventType.LOG, {"line": "nobody there"})
    assert await subscription.wait(3) is Ending.GONE


async def test_close_all_ends_every_subscription(jobprogress_store: JobStore, hub: Hub) -> None:
    job_id = await new_job(jobprogress_store)
    subscription, _ = await subscribe(hub, job_id)
    waiter = asyncio.create_task(subscription.wait(10))
    await asyncio.sleep(0)
    hub.close_all()
    async with asyncio.timeout(1):
        assert await waiter is Ending.SHUTDOWN


async def test_wait_times_out_with_none(jobprogress_store: JobStore, hub: Hub) -> None:
    subscription, _ = await subscribe(hub, await new_job(jobprogress_store))
    assert await subscription.wait(0.05) is None


async def test_each_event_is_decoded_and_encoded_once_for_all_subscribers(
    jobprogress_store: JobStore, hub: Hub
) -> None:
    job_id = await new_job(jobprogress_store)
    subscriptions = [(await subscribe(hub, job_id))[0] for _ in range(5)]
    await jobprogress_store.append(job_id, EventType.LOG, {"line": "shared"})
    received = [(await buffered_frames(subscription, 1))[0] for subscription in subscriptions]
    assert all(event is received[0] for event in received)  # one object, not five copies
    first_bytes, first_chunk = received[0].sse, received[0].chunk
    assert all(event.sse is first_bytes and event.chunk is first_chunk for event in received)
