"""Blocking readers on both kinds of client: interrupted at once from another task, their
connection given back closed; on Redis Cluster, one connection on the node that owns the
slot, kept through a reshard (MOVED) and a manual failover (UNBLOCKED) with nothing lost.

The cluster tests run on the testing package's local cluster (``jobprogress_redis_cluster``:
three masters, a replica each); they reshard a slot and fail a master over, leaving the
cluster healthy but rearranged.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from jobprogress_core.keys import Keys
from jobprogress_core.readers import READ_ERRORS, ClusterStreamReader, blocking_reader
from jobprogress_core.redis import StreamReader, create_redis, disconnect, stop_reader
from jobprogress_core.settings import Settings
from jobprogress_testing import TEST_ENV, eventually
from jobprogress_testing import RedisCluster as LocalCluster


def role() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def blocked_clients(client: Redis, name: str) -> int:
    return sum(1 for c in await client.client_list() if c["name"] == name and "b" in c["flags"])


# -- one Redis -------------------------------------------------------------------------------


@pytest.fixture
async def single(jobprogress_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Redis, Redis]]:
    """A reader client (pool of 2) and a client for everything else."""
    settings = jobprogress_settings("progress-service")
    reader = create_redis(settings, block_ms=3000, max_connections=2, role=role())
    other = create_redis(settings)
    yield reader, other
    await reader.aclose()
    await other.aclose()


async def test_one_redis_gets_the_held_connection_reader(single: tuple[Redis, Redis]) -> None:
    assert isinstance(blocking_reader(single[0]), StreamReader)


async def test_an_interrupted_read_fails_at_once_and_the_next_reconnects(single: tuple[Redis, Redis]) -> None:
    client, other = single
    reads = blocking_reader(client)
    name = client.connection_pool.connection_kwargs["client_name"]
    stream = f"test:readers:{uuid.uuid4().hex}"
    read = asyncio.create_task(reads.xread({stream: "0-0"}, block_ms=2500, count=10))
    await eventually(lambda: blocked_clients(other, name), "the read blocked in Redis", timeout=2)

    await reads.interrupt()
    with pytest.raises(READ_ERRORS):
        async with asyncio.timeout(0.5):
            await read

    added = await other.xadd(stream, {"n": "1"})
    assert await reads.xread({stream: "0-0"}, block_ms=10, count=10) == [(stream, [(added, {"n": "1"})])]
    await reads.close()


async def test_close_gives_the_connection_back_closed(single: tuple[Redis, Redis]) -> None:
    client, other = single
    name = client.connection_pool.connection_kwargs["client_name"]
    readers = [blocking_reader(client), blocking_reader(client)]
    for reads in readers:  # the pool's two connections, one each
        await reads.xread({f"test:readers:{uuid.uuid4().hex}": "0-0"}, block_ms=10, count=1)

    async def named() -> int:
        return sum(1 for c in await other.client_list() if c["name"] == name)

    assert await named() == 2
    for reads in readers:
        await reads.close()
    # Redis drops a closed connection from its list once it has read the close: wait for it.
    await eventually(lambda: _none_left(named), "both connections gone from CLIENT LIST")
    # Both went back to the pool: two readers can read again, with a pool of two.
    for reads in readers:
        await reads.xread({f"test:readers:{uuid.uuid4().hex}": "0-0"}, block_ms=10, count=1)
        await reads.close()


# -- Redis Cluster ---------------------------------------------------------------------------


@pytest.fixture
def cluster_settings(jobprogress_redis_cluster: LocalCluster) -> Settings:
    prefix = f"test{uuid.uuid4().hex[:8]}:"
    environ = {**TEST_ENV, "REDIS_URL": jobprogress_redis_cluster.url, "JOBPROGRESS_KEY_PREFIX": prefix}
    return Settings.from_env("progress-service", environ)


@pytest.fixture
async def cluster(cluster_settings: Settings) -> AsyncIterator[tuple[RedisCluster, RedisCluster]]:
    """A reader cluster client (a connection per partition on each node) and one for
    everything else."""
    partitions = cluster_settings.partitions
    reader = create_redis(cluster_settings, block_ms=3000, max_connections=partitions, role=role())
    other = create_redis(cluster_settings)
    assert isinstance(reader, RedisCluster) and isinstance(other, RedisCluster)
    await other.initialize()
    yield reader, other
    await reader.aclose()
    await other.aclose()


def node_client(node: ClusterNode) -> Redis:
    """A plain client of one node, for the admin commands a test runs there."""
    return Redis(host=node.host, port=int(node.port), decode_responses=True)


async def wait_blocked_on(node: ClusterNode, name: str) -> None:
    admin = node_client(node)
    try:
        await eventually(lambda: blocked_clients(admin, name), f"the read blocked on {node.name}", timeout=3)
    finally:
        await admin.aclose()


def reader_name(client: RedisCluster) -> str:
    name: str = client.nodes_manager.connection_kwargs["client_name"]
    return name


async def owner(other: RedisCluster, key: str) -> ClusterNode:
    await other.nodes_manager.initialize()
    node = other.get_node_from_key(key)
    assert node is not None
    return node


async def test_each_partition_is_read_on_the_node_that_owns_it(
    cluster: tuple[RedisCluster, RedisCluster], cluster_settings: Settings
) -> None:
    client, other = cluster
    keys = Keys(cluster_settings.key_prefix, cluster_settings.partitions)
    streams = [keys.hub_wake(partition, "t") for partition in range(keys.partitions)]
    readers = [blocking_reader(client) for _ in streams]
    assert all(isinstance(reads, ClusterStreamReader) for reads in readers)
    reads = [
        asyncio.create_task(reader.xread({stream: "0-0"}, block_ms=2500, count=10))
        for reader, stream in zip(readers, streams, strict=True)
    ]
    nodes = {(await owner(other, stream)).name for stream in streams}
    assert len(nodes) >= 2, "the partitions should spread over the masters"
    for stream in streams:
        await wait_blocked_on(await owner(other, stream), reader_name(client))
    added = [await other.xadd(stream, {"n": "1"}) for stream in streams]

    async with asyncio.timeout(2):
        replies = await asyncio.gather(*reads)
    assert replies == [[(s, [(a, {"n": "1"})])] for s, a in zip(streams, added, strict=True)]
    # One connection per reader, on its partition's node, and none left once they close.
    held = {(reader._node.name if reader._node else None) for reader in readers}
    assert held == nodes
    for reader in readers:
        await reader.close()
    assert all(len(node._free) == len(node._connections) for node in client.get_nodes())
    await other.delete(*streams)


async def test_an_interrupted_cluster_read_fails_at_once(
    cluster: tuple[RedisCluster, RedisCluster], cluster_settings: Settings
) -> None:
    client, other = cluster
    stream = Keys(cluster_settings.key_prefix).hub_wake(0, "t")
    reads = blocking_reader(client)
    read = asyncio.create_task(reads.xread({stream: "0-0"}, block_ms=2500, count=10))
    await wait_blocked_on(await owner(other, stream), reader_name(client))
    await reads.interrupt()
    with pytest.raises(READ_ERRORS):
        async with asyncio.timeout(0.5):
            await read

    # stop_reader, on a cluster client: every node's connections closed under the loop,
    # which sees its read fail and ends.
    async def loop() -> None:
        with contextlib.suppress(*READ_ERRORS):
            await reads.xread({stream: "0-0"}, block_ms=2500, count=10)

    task = asyncio.create_task(loop())
    await wait_blocked_on(await owner(other, stream), reader_name(client))
    started = asyncio.get_running_loop().time()
    await stop_reader(task, client)  # type: ignore[arg-type]
    assert asyncio.get_running_loop().time() - started < 0.5
    await disconnect(client)  # closed already: nothing left to do, no error


async def move_slot(other: RedisCluster, slot: int, target: ClusterNode) -> None:
    """Reshard one slot to ``target`` as redis-cli does: IMPORTING/MIGRATING, MIGRATE its
    keys, then SETSLOT NODE on every master."""
    await other.nodes_manager.initialize()
    source = other.nodes_manager.slots_cache[slot][0]
    src, dst = node_client(source), node_client(target)
    try:
        source_id = await src.execute_command("CLUSTER MYID")
        target_id = await dst.execute_command("CLUSTER MYID")
        await dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        await src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := await src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            await src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        for node in (target, source, *(n for n in other.get_primaries() if n not in (target, source))):
            admin = node_client(node)
            await admin.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            await admin.aclose()
    finally:
        await src.aclose()
        await dst.aclose()


async def test_a_blocked_read_follows_its_slot_to_the_new_owner(
    cluster: tuple[RedisCluster, RedisCluster], cluster_settings: Settings
) -> None:
    client, other = cluster
    stream = Keys(cluster_settings.key_prefix).hub_wake(1, "t")
    first = await other.xadd(stream, {"n": "0"})
    source = await owner(other, stream)
    target = next(node for node in other.get_primaries() if node.name != source.name)
    reads = blocking_reader(client)
    read = asyncio.create_task(reads.xread({stream: first}, block_ms=2500, count=10))
    await wait_blocked_on(source, reader_name(client))

    await move_slot(other, other.keyslot(stream), target)
    # Redis answers the blocked read MOVED: the reader reads again on the new owner, after
    # the explicit ID, so an entry added there now is the one it returns.
    await wait_blocked_on(target, reader_name(client))
    added = await other.xadd(stream, {"n": "1"})
    async with asyncio.timeout(2):
        assert await read == [(stream, [(added, {"n": "1"})])]
    await reads.close()
    await other.delete(stream)


async def test_a_manual_failover_unblocks_the_read_which_goes_on_on_the_new_master(
    cluster: tuple[RedisCluster, RedisCluster],
    cluster_settings: Settings,
    jobprogress_redis_cluster: LocalCluster,
) -> None:
    client, other = cluster
    stream = Keys(cluster_settings.key_prefix).hub_wake(2, "t")
    first = await other.xadd(stream, {"n": "0"})
    master = await owner(other, stream)
    reads = blocking_reader(client)
    read = asyncio.create_task(reads.xread({stream: first}, block_ms=2500, count=10))
    await wait_blocked_on(master, reader_name(client))

    old = jobprogress_redis_cluster.master_of(stream)
    promoted = await asyncio.to_thread(jobprogress_redis_cluster.failover, old)  # its replica, now master
    assert promoted.port != old.port and jobprogress_redis_cluster.master_of(stream).port == promoted.port
    await wait_blocked_on(ClusterNode("127.0.0.1", promoted.port), reader_name(client))
    added = await other.xadd(stream, {"n": "1"})
    async with asyncio.timeout(2):
        assert await read == [(stream, [(added, {"n": "1"})])]
    await reads.close()
    await other.delete(stream)


async def _none_left(count: Callable[[], Awaitable[int]]) -> bool:
    return await count() == 0
