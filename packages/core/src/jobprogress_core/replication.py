"""Writes that wait for a replica.

Redis replicates asynchronously: a master acknowledges a write before any replica has it,
so a master that dies at that moment takes the write with it, and the replica promoted in
its place never had it. For the two writes of a job that a client is told about and that
happen once per job, its creation (the ``202``) and its end (the terminal event), a
service can ask for more (``JOBPROGRESS_REDIS_WAIT_REPLICAS``): it sends ``WAIT`` after the
write on the same connection (``WAIT`` counts that connection's writes), and answers once
that many replicas have the write, or after ``JOBPROGRESS_REDIS_WAIT_MS``. A write the
replicas did not confirm in time is still answered (the master has it), logged and counted
(``jobprogress_redis_unreplicated_writes_total``). ``WAIT`` narrows the window; it does not
make replication synchronous (README, "Delivery, in writing").

Progress events and log lines do not wait: a failover can lose the last ones a worker wrote
before the master died. The worker's next write carries the job's current state, and a
client that saw an event which is then lost resumes from the log the promoted replica has.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["UNREPLICATED", "Replication", "run_replicated"]

logger = logging.getLogger(__name__)

UNREPLICATED = Counter(
    "jobprogress_redis_unreplicated_writes_total",
    "Job creations and ends that fewer replicas than JOBPROGRESS_REDIS_WAIT_REPLICAS confirmed in time",
    ["write"],
)
#: Replies that mean the script did not run on that node (the slot moved, or is moving).
REDIRECTED = (MovedError, AskError, TryAgainError, ClusterDownError)


@dataclass(frozen=True)
class Replication:
    """How many replicas must confirm a job's creation and end, waiting at most
    ``timeout_ms``; ``replicas=0``: no waiting."""

    replicas: int = 0
    timeout_ms: int = 100


async def run_replicated(
    redis: Redis,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[str],
    replication: Replication,
    write: str,
) -> Any:
    """``script``'s reply, once ``replication.replicas`` replicas have the write (or the
    wait timed out: then ``write`` is counted as unreplicated)."""
    if replication.replicas <= 0:
        return await script(keys=keys, args=args)
    if isinstance(redis, RedisCluster):
        reply, acknowledged = await _on_owner(redis, script, keys, args, replication)
    else:
        async with redis.pipeline(transaction=False) as pipe:  # one connection for both
            await script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", replication.replicas, replication.timeout_ms)
            reply, acknowledged = await pipe.execute()
    if int(acknowledged) < replication.replicas:
        UNREPLICATED.labels(write).inc()
        logger.warning(
            "%s of %s confirmed by %s of %d replicas within %d ms",
            write, keys[0], acknowledged, replication.replicas, replication.timeout_ms,
        )  # fmt: skip
    return reply


async def _on_owner(
    cluster: RedisCluster,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[str],
    replication: Replication,
) -> tuple[Any, int]:
    """The script and ``WAIT`` on one connection to the master of the keys' slot. The
    cluster client would send a keyless ``WAIT`` to any node; so it is sent here by hand,
    and where the slot has just moved the write goes through the client (which follows the
    redirect) without the wait."""
    await cluster.initialize()  # connects lazily: the slot map comes with the first command
    for _ in range(2):
        try:
            node = cluster.get_node_from_key(keys[0])
        except SlotNotCoveredError:
            node = None
        if node is None:  # the slot map has no owner for it (yet): the client finds one
            return await script(keys=keys, args=args), 0
        connection = node.acquire_connection()
        try:
            commands: list[tuple[str | int, ...]] = [
                ("EVALSHA", script.sha, len(keys), *keys, *args),
                ("WAIT", replication.replicas, replication.timeout_ms),
            ]
            await connection.send_packed_command(connection.pack_commands(commands))
            replies = [await _reply(connection) for _ in commands]
        except BaseException as exc:
            await connection.disconnect()  # a reply may still be on its way: not for the next caller
            if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
                await _refresh(cluster)  # the node may be gone: the next call asks the cluster
            raise
        finally:
            node.release(connection)
        reply, acknowledged = replies
        if isinstance(reply, NoScriptError):
            script.sha = await cluster.script_load(script.script)  # on every master
            continue
        if isinstance(reply, REDIRECTED):
            return await script(keys=keys, args=args), 0
        if isinstance(reply, Exception):
            raise reply  # the script's own error (a lost claim): as if called directly
        return reply, int(acknowledged)
    raise NoScriptError(f"script {script.sha} not loaded on the master of {keys[0]}")


async def _refresh(cluster: RedisCluster) -> None:
    """Learn the cluster's layout again (what the cluster client does itself after a
    connection error), so that a promoted replica is found once it has taken over."""
    try:
        await cluster.nodes_manager.initialize()
    except (RedisConnectionError, RedisTimeoutError, RedisClusterException) as exc:
        logger.warning("could not refresh the cluster's layout: %s", exc)


async def _reply(connection: Any) -> Any:
    """One reply; an error reply is returned, not raised, so that the next one is still
    read (a lost connection is raised)."""
    try:
        return await connection.read_response()
    except ResponseError as exc:
        return exc
