"""Redis clients and the one place where stream replies are normalised.

The protocol is pinned to RESP2 with decoded strings, and every stream reply goes through
:func:`stream_entries`, so no other module depends on the reply shape. A loop that reads
hundreds of times a second uses :class:`StreamReader`, which skips the client's per-call
layers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.cluster import LoadBalancingStrategy
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobprogress_client.backoff import Backoff

from .redis_urls import ClusterUrl, is_cluster_url
from .settings import Settings
from .tasks import cancel_and_wait

logger = logging.getLogger(__name__)

RESP_PROTOCOL = 2
#: What a lost or unreachable Redis raises; callers back off and retry on these. Only
#: redis-py's own classes: a builtin ``TimeoutError`` or ``ConnectionResetError`` (both
#: ``OSError``) comes from elsewhere, such as a client that stopped reading.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)

Entry = tuple[str, dict[str, str]]
T = TypeVar("T")


class CancellableSend:
    """A connection that sends under ``asyncio.timeout`` rather than ``asyncio.wait_for``.

    redis-py sends every command through ``asyncio.wait_for`` when a socket timeout is set,
    and on Python 3.11 ``wait_for`` loses a cancellation that lands while it sends (it
    returns the finished send instead of raising; CPython gh-86296, fixed in 3.12): a task
    cancelled in the middle of a Redis call then goes on, so a stopping worker waited for
    ever for a job it had cancelled. Without a socket timeout redis-py sends directly, so
    the send runs with none, under a timeout of the same length. (It also spares the task
    ``wait_for`` creates for every command.)
    """

    socket_timeout: float | None

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout, self.socket_timeout = self.socket_timeout, None  # one task holds a connection
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError as exc:  # ours: redis-py's own are RedisTimeoutError
            raise RedisTimeoutError("Timeout writing to socket") from exc
        finally:
            self.socket_timeout = timeout


class CancellableConnection(CancellableSend, Connection):
    pass


class CancellableSSLConnection(CancellableSend, SSLConnection):
    pass


class CancellableUnixDomainSocketConnection(CancellableSend, UnixDomainSocketConnection):
    pass


CANCELLABLE: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: CancellableConnection,
    SSLConnection: CancellableSSLConnection,
    UnixDomainSocketConnection: CancellableUnixDomainSocketConnection,
}


def create_redis(
    settings: Settings,
    *,
    block_ms: int = 0,
    max_connections: int | None = None,
    role: str = "",
    replicas: bool = False,
) -> Redis:
    """A client for ``REDIS_URL`` whose pool never holds more than ``max_connections``
    (default ``JOBPROGRESS_REDIS_POOL_SIZE``): a command waits for a free connection rather
    than opening more. Connections are named ``<service>:<pid>[:role]`` (``CLIENT LIST``).

    ``block_ms`` is the longest ``BLOCK`` this client will issue: its socket timeout is
    set above it, so a blocking read is never cut short by the client itself. Such a
    reader gets no automatic retries: its loop backs off by itself, and a retry would
    silently re-issue a read that the loop's owner has just interrupted.

    For a ``redis+cluster://`` URL it is a cluster client (:func:`create_cluster`), typed as
    :class:`Redis`: the commands the services use are the same on both. With ``replicas``
    its reads go to replicas (see there); one Redis has none, so there it changes nothing.
    """
    if is_cluster_url(settings.redis_url):
        cluster = create_cluster(
            settings, block_ms=block_ms, max_connections=max_connections, role=role, replicas=replicas
        )
        return cast(Redis, cluster)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.redis_pool_size,
        timeout=settings.redis_timeout,
        **_connection_options(settings, block_ms, role),
    )
    pool.connection_class = CANCELLABLE.get(pool.connection_class, pool.connection_class)
    return Redis.from_pool(pool)  # the client owns its pool: aclose() closes it


def _connection_options(settings: Settings, block_ms: int, role: str) -> dict[str, Any]:
    """What every connection of both kinds of client is: RESP2 and decoded, a socket timeout
    above the longest block, named, retried (but a blocking reader's: see create_redis)."""
    return {
        "protocol": RESP_PROTOCOL,
        "decode_responses": True,
        "socket_timeout": settings.redis_timeout + block_ms / 1000,
        "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 30,
        "client_name": ":".join(part for part in (settings.service, str(os.getpid()), role) if part),
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=0 if block_ms else 3),
    }


class WaitingCluster(RedisCluster):
    """A cluster client whose commands wait for one of ``concurrency`` turns.

    redis-py's cluster pool does not wait for a free connection: past ``max_connections``
    on a node it raises ``MaxConnectionsError`` at once, so a burst of requests (sixty
    streams opening together) failed with 503s where one Redis's pool would have queued
    them. Here a command waits for a turn first, as on one Redis, and the connections per
    node stay within ``concurrency`` whatever the load. Pipelines (one connection on each
    node they send to) wait for one of ``concurrency`` turns of their own: a pipeline may
    send a redirected command again as a command, so it must not hold a command's turn
    meanwhile. Commands and pipelines together stay within the pools' ceiling of twice
    ``concurrency`` (a burst of fifty submissions, each with its index pipeline, went past
    it); the few commands sent on a held connection come on top.
    """

    def __init__(self, concurrency: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(concurrency)
        self.pipeline_turns = asyncio.Semaphore(concurrency)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._turns:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return WaitingPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py makes its own


class WaitingPipeline(ClusterPipeline):
    """A pipeline of a :class:`WaitingCluster`, sent once it has a pipeline's turn."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with cast(WaitingCluster, self.cluster_client).pipeline_turns:
            return await super().execute(raise_on_error, allow_redirections)


def create_cluster(
    settings: Settings,
    *,
    block_ms: int = 0,
    max_connections: int | None = None,
    role: str = "",
    replicas: bool = False,
) -> RedisCluster:
    """A Redis Cluster client for a ``redis+cluster://`` ``REDIS_URL``, configured as
    :func:`create_redis` configures its client: at most ``max_connections`` commands in
    flight at once (:class:`WaitingCluster`), so as many connections per node.

    A dead shard does not stop the client from serving the others (``require_full_coverage``
    off). With ``replicas``, every connection is ``READONLY`` and a read command goes to a
    replica of its slot's master (in turn, when it has several), or to the master when it
    has none; writes still go to the master. Such a client sees what replication has
    carried so far: a little behind the master, and never what a failover would lose.
    """
    url = ClusterUrl.parse(settings.redis_url)
    limit = max_connections or settings.redis_pool_size
    cluster = WaitingCluster(
        limit,
        startup_nodes=[ClusterNode(host, port) for host, port in url.nodes],
        username=url.username,
        password=url.password,
        ssl=url.tls,
        require_full_coverage=False,
        max_connections=2 * limit,  # a ceiling above the waiting bound: pipelines come on top
        load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN_REPLICAS if replicas else None,
        **_connection_options(settings, block_ms, role),
    )
    # The cancellable sends of create_redis's connections, for every node it will know.
    manager = cluster.nodes_manager
    connection_class = manager.connection_kwargs["connection_class"]
    manager.connection_kwargs["connection_class"] = CANCELLABLE.get(connection_class, connection_class)
    for node in manager.startup_nodes.values():
        node.connection_class = manager.connection_kwargs["connection_class"]
    return cluster


def stream_entries(reply: Any) -> list[tuple[str, list[Entry]]]:
    """``XREAD``/``XREADGROUP`` reply as ``[(stream, [(id, fields), ...]), ...]``.

    Accepts both the RESP2 list form and the RESP3 map form; deleted entries
    (``None`` fields, left in a group's pending list) come back with empty fields.
    """
    if not reply:
        return []
    pairs: Iterable[Any] = reply.items() if isinstance(reply, dict) else reply
    result = []
    for stream, entries in pairs:
        result.append((stream, [(entry_id, dict(fields or {})) for entry_id, fields in entries]))
    return result


def raw_stream_entries(reply: Any) -> list[tuple[str, list[Entry]]]:
    """An ``XREAD`` reply as Redis sends it (RESP2, before redis-py's callbacks: each
    entry's fields are a flat ``[field, value, ...]`` list) in the shape of
    :func:`stream_entries`."""
    if not reply:
        return []
    result = []
    for stream, entries in reply:
        result.append((stream, [(entry_id, _pairs(fields)) for entry_id, fields in entries]))
    return result


def _pairs(flat: list[str] | None) -> dict[str, str]:
    items = iter(flat or ())
    return dict(zip(items, items, strict=True))


class StreamReader:
    """``XREAD BLOCK`` on one connection that the reader keeps.

    A call through the :class:`Redis` client takes a connection from the pool and gives it
    back, and wraps the command in retries and reply callbacks each time; for a loop woken up
    by every event that costs more than the read. Here the command goes straight onto the
    held connection and the reply straight through the parser. The connection comes from
    ``redis``'s pool (named, with its socket timeout above the block time: see
    :func:`create_redis`), so :func:`stop_reader` still interrupts a read by closing it. A
    read that fails or is cancelled closes the connection (redis-py does so, so that no late
    reply is taken for the next one); the next read opens it again.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._connection: AbstractConnection | None = None

    async def xread(
        self, streams: Mapping[str, str], *, block_ms: int, count: int
    ) -> list[tuple[str, list[Entry]]]:
        """New entries after each stream's ID, waiting up to ``block_ms`` for one."""
        if self._connection is None:
            pool = self.redis.connection_pool
            self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        connection = self._connection
        await connection.send_command(
            "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", *streams.keys(), *streams.values()
        )
        return raw_stream_entries(await connection.read_response())

    async def interrupt(self) -> None:
        """Close the held connection now, from any task: a read blocked on it fails at once."""
        if self._connection is not None:
            await self._connection.disconnect()

    async def close(self) -> None:
        """Give the held connection back to the pool, closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.disconnect()
            finally:
                await self.redis.connection_pool.release(connection)


def claimed_entries(reply: Any) -> list[Entry]:
    """``XAUTOCLAIM`` reply (next cursor, entries, deleted IDs) as ``[(id, fields), ...]``;
    entries deleted from the stream while pending are left out."""
    if not reply:
        return []
    return [(entry_id, dict(fields)) for entry_id, fields in reply[1] or [] if fields]


async def retry_while_unavailable(call: Callable[[], Awaitable[T]], *, grace: float) -> T:
    """Run ``call`` again with backoff while Redis is unreachable, for up to ``grace``
    seconds; the last error is raised after that. Only for calls safe to repeat."""
    deadline = asyncio.get_running_loop().time() + grace
    backoff = Backoff(first=0.1, cap=2.0)
    while True:
        try:
            return await call()
        except REDIS_ERRORS as exc:
            if asyncio.get_running_loop().time() + backoff.delay > deadline:
                raise
            logger.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff.delay)
            await backoff.sleep()


def range_entries(reply: Any) -> list[Entry]:
    """``XRANGE``/``XREVRANGE`` reply as ``[(id, fields), ...]``."""
    return [(entry_id, dict(fields or {})) for entry_id, fields in reply or []]


async def disconnect(client: Redis) -> None:
    """Close every connection of ``client`` now, those in use too (a command waiting on one
    fails at once); the next command opens a new one. For a cluster client, on every node
    it knows, its startup nodes included."""
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        nodes = [*manager.startup_nodes.values(), *manager.nodes_cache.values()]
        await asyncio.gather(*(node.disconnect() for node in nodes))
    else:
        await client.connection_pool.disconnect()


async def close(client: Redis) -> None:
    """Close ``client`` for good. Its connections are closed first: a cluster client that
    has met a connection error skips its own ``aclose()`` until it has learned the cluster
    again (redis-py 8.1), which would leave them open."""
    await disconnect(client)
    await client.aclose()


async def stop_reader(task: asyncio.Task[None], reader: Redis, *, timeout: float = 5.0) -> None:
    """End a loop blocked in ``XREAD``/``XREADGROUP`` on its own client ``reader``.

    Cancelling a task in the middle of a blocking read can be swallowed by redis-py (the
    read simply starts again), so the loop is told to stop by its caller, and its
    connection is closed under it: the read fails at once and the loop sees that it must
    stop. Cancellation remains only as a last resort.
    """
    await disconnect(reader)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except TimeoutError:
        logger.warning("reader loop %s did not stop in %.1fs; cancelling it", task.get_name(), timeout)
        await cancel_and_wait(task)
    await reader.aclose()
