"""Blocking stream reads on a held connection, on one Redis and on Redis Cluster.

A loop that blocks in ``XREAD`` over streams of one slot (a partition's: see
:mod:`.keys`) takes a :func:`blocking_reader` for its client: a
:class:`~jobprogress_core.redis.StreamReader` on one Redis, a :class:`ClusterStreamReader`
on a cluster. Both send the command straight onto one connection they keep, so a read costs
no pool checkout, retry wrapper or reply callback, and both can be interrupted from another
task by closing that connection (:meth:`BlockingReader.interrupt`).

On a cluster the reader follows its slot: a ``MOVED`` (the slot was resharded, or a replica
took over) refreshes the slot map and reads again on the new owner, an ``ASK`` reads once on
the node importing the slot, and an ``UNBLOCKED`` (the node changed role under the blocked
read) reads again at once. Failures that last (a node unreachable during a failover, the
cluster down, ``TRYAGAIN`` while a slot's keys are split between two nodes) are raised, as
:data:`READ_ERRORS`, for the loop to back off; the next read refreshes the slot map first.
The caller always passes explicit stream IDs, never ``$``, so a read issued again after any
of these loses nothing.

A reader whose cluster client reads replicas (``create_redis(..., replicas=True)``) reads a
replica of the slot's master, keeping to the one it holds while the slot map lists it: what
it returns has been replicated, so a failover cannot take it back (the replica read from is
the one promoted). A replica that fails is read again until the cluster drops it from the
slot map (``FAIL``, a node timeout later); a slot with no replica listed is read on its
master, and the slot map looked at again every :data:`REPLICA_LOOKUP_SECONDS` (by one reader
of the client) until a replica is back.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

from .redis import REDIS_ERRORS, Entry, StreamReader, raw_stream_entries

__all__ = ["READ_ERRORS", "BlockingReader", "ClusterStreamReader", "blocking_reader"]

#: What a read raises while its Redis, or its slot's owner, is unavailable: back off and read
#: again. Besides a lost connection or a timeout: ``CLUSTERDOWN``/``MASTERDOWN``
#: (``ClusterError``), ``TRYAGAIN`` (a slot's keys split between two nodes while they move),
#: a slot no node serves, or a slot map that cannot be refreshed (``RedisClusterException``).
READ_ERRORS: tuple[type[Exception], ...] = (
    *REDIS_ERRORS,
    ClusterError,
    TryAgainError,
    RedisClusterException,
)

#: Redirections one read follows before it gives up (and its loop backs off).
MAX_REDIRECTS = 5
#: How often a reader that wants a replica, and reads a master for want of one, looks at the
#: slot map again (after a failover the old master comes back as a replica).
REPLICA_LOOKUP_SECONDS = 10.0

#: When each cluster client's readers are to look for a replica next: one of them does, for
#: all (a refresh of the slot map has every connection of the client opened again).
_replica_lookups: weakref.WeakKeyDictionary[RedisCluster, float] = weakref.WeakKeyDictionary()


class BlockingReader(Protocol):
    async def xread(
        self, streams: Mapping[str, str], *, block_ms: int, count: int
    ) -> list[tuple[str, list[Entry]]]:
        """New entries after each stream's ID, waiting up to ``block_ms`` for one."""

    async def interrupt(self) -> None:
        """Close the held connection now, from any task: a read blocked on it fails at once."""

    async def close(self) -> None:
        """Give the held connection back, closed: a reader that ends leaves none open."""


def blocking_reader(client: Redis) -> BlockingReader:
    """The reader for ``client`` (a :class:`RedisCluster` typed as :class:`Redis`, as
    :func:`~jobprogress_core.redis.create_redis` returns it, gets the cluster's)."""
    if isinstance(client, RedisCluster):
        return ClusterStreamReader(client)
    return StreamReader(client)


class ClusterStreamReader:
    """``XREAD BLOCK`` on a held connection of the node that owns the streams' slot.

    Every key of one read must share a slot (redis-py and the server refuse anything else);
    the first key names it. The connection comes from that node's pool in ``cluster``
    (named, with its socket timeout above the block time: see
    :func:`~jobprogress_core.redis.create_cluster`) and is kept while the node serves the
    slot (its master, or a replica of it when ``cluster`` reads replicas); when that changes,
    it is closed and given back, and one of the new node's is taken. So a reader holds one
    connection, whatever the topology does.
    """

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        #: Reads go to a replica (the client's connections are all ``READONLY``).
        self.replicas = cluster.load_balancing_strategy is not None
        self._node: ClusterNode | None = None
        self._connection: Connection | None = None
        self._initialized = False
        self._stale = False

    async def xread(
        self, streams: Mapping[str, str], *, block_ms: int, count: int
    ) -> list[tuple[str, list[Entry]]]:
        args: tuple[str | int, ...] = (
            "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", *streams.keys(), *streams.values()
        )  # fmt: skip
        slot_key = next(iter(streams))
        asking: ClusterNode | None = None
        for _ in range(MAX_REDIRECTS):
            try:
                await self._refresh_if_stale()
                node = asking or self._node_for(slot_key)
                return await self._read_on(node, args, asking=asking is not None)
            except MovedError:
                self._stale, asking = True, None
            except AskError as exc:
                asking = self.cluster.get_node(host=exc.host, port=exc.port)
                self._stale = asking is None
            except READ_ERRORS:
                self._stale = True
                raise
            except ResponseError as exc:
                if not str(exc).startswith("UNBLOCKED"):
                    raise
                # The node changed role under the blocked read (a failover): read again now.
                self._stale, asking = True, None
        raise ClusterError(f"XREAD redirected {MAX_REDIRECTS} times in a row")

    def _node_for(self, key: str) -> ClusterNode:
        """The node to read ``key``'s slot on: its master, or when reading replicas, the
        replica held if the slot map still lists it, else the slot's first replica."""
        slot = self.cluster.keyslot(key)
        nodes = self.cluster.nodes_manager.slots_cache.get(slot)
        if not nodes:
            raise SlotNotCoveredError(f"slot {slot} is not served by any node the client knows")
        if not self.replicas:
            return nodes[0]
        replicas = nodes[1:]
        if not replicas:
            now = time.monotonic()
            if now >= _replica_lookups.setdefault(self.cluster, now + REPLICA_LOOKUP_SECONDS):
                _replica_lookups[self.cluster] = now + REPLICA_LOOKUP_SECONDS
                self._stale = True  # the read after this one looks again
            return nodes[0]
        return next((node for node in replicas if node == self._node), replicas[0])  # equal by address

    async def _refresh_if_stale(self) -> None:
        """Learn the slot map: once (the client connects lazily), and after any failure or
        redirection (who owns the slot may have changed). The connections that asked for it
        are closed again: the client's open connections stay those its readers hold."""
        if self._initialized and not self._stale:
            return
        if not self._initialized:
            await self.cluster.initialize()
            self._initialized = True
        else:
            await self.cluster.nodes_manager.initialize()
        self._stale = False
        manager = self.cluster.nodes_manager
        # By identity: a startup node and the known node of the same address are two objects
        # (equal by name), each with a pool of its own.
        nodes = {id(node): node for node in (*manager.startup_nodes.values(), *manager.nodes_cache.values())}
        await asyncio.gather(*(node.disconnect_free_connections() for node in nodes.values()))

    async def _read_on(
        self, node: ClusterNode, args: tuple[str | int, ...], *, asking: bool
    ) -> list[tuple[str, list[Entry]]]:
        connection = await self._hold(node)
        if asking:  # the node is importing the slot: it serves the next command only
            await connection.send_packed_command(connection.pack_commands([("ASKING",), args]))
            await connection.read_response()
        else:
            await connection.send_command(*args)
        return raw_stream_entries(await connection.read_response())

    async def _hold(self, node: ClusterNode) -> Connection:
        """A connection of ``node``: the held one if it is that node's, else one taken from
        ``node``'s pool after the held one is closed and given back."""
        if node is not self._node or self._connection is None:
            await self.close()
            self._connection = node.acquire_connection()  # MaxConnectionsError: a ConnectionError
            self._node = node
        connection = self._connection
        # A slot map refresh marks every connection: the state of one kept across it may be stale.
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        return connection

    async def interrupt(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect()

    async def close(self) -> None:
        connection, node = self._connection, self._node
        self._connection = self._node = None
        if connection is not None and node is not None:
            try:
                await connection.disconnect()
            finally:
                node.release(connection)
