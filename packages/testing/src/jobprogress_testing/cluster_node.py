"""One node of a local Redis Cluster: a private ``redis-server --cluster-enabled yes``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .backends import RedisServer
from .ports import free_port

__all__ = ["BUS_OFFSET", "RedisClusterNode"]

#: A node's cluster bus listens on its port + this.
BUS_OFFSET = 10000


class RedisClusterNode(RedisServer):
    """One ``redis-server --cluster-enabled yes``: a folder of its own with its
    ``nodes.conf`` (kept, so a restart rejoins as the same node), on a port whose
    port + 10000 (the cluster bus) was free too. Nothing is persisted but ``nodes.conf``."""

    def __init__(self, workdir: Path, port: int | None = None, *, node_timeout_ms: int = 2000) -> None:
        port = port or free_port(bus_offset=BUS_OFFSET)
        config = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(workdir / f"redis-{port}" / "nodes.conf"),
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "no",  # a dead shard never stops the others
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not 5 s later
        ]  # fmt: skip
        super().__init__(workdir, port, config=config)
        self.name = f"redis-server:{port}"
        self._node_id: str | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def nodes_conf(self) -> Path:
        return self.data / "nodes.conf"

    @property
    def node_id(self) -> str:
        """Its cluster node ID, the same after a restart (``nodes.conf`` keeps it)."""
        if self._node_id is None:
            self._node_id = str(self.command("CLUSTER", "MYID"))
        return self._node_id

    def command(self, *args: Any, timeout: float = 5.0) -> Any:
        """One command and its reply; an error reply raises (``redis.RedisError``)."""
        return self.commands([args], timeout=timeout)[0]

    def commands(self, commands: Sequence[Sequence[Any]], *, timeout: float = 5.0) -> list[Any]:
        """Several commands in one round trip on one new connection, not retried. Replies are
        decoded, keys included, with ``surrogateescape``: a key read is a key that can be
        sent back as it was. An error reply is returned in its place, as an exception."""
        with redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            encoding_errors="surrogateescape",
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        ) as client:
            pipeline = client.pipeline(transaction=False)
            for name, *args in commands:  # the name as it is: redis-py reads replies by it
                pipeline.execute_command(name, *(encoded(arg) for arg in args))
            replies: list[Any] = pipeline.execute(raise_on_error=False)
        if len(commands) == 1 and isinstance(replies[0], Exception):
            raise replies[0]
        return replies

    def role(self) -> str:
        """``master`` or ``replica``, as it says itself (``ROLE``)."""
        role = str(self.command("ROLE")[0])
        return "replica" if role == "slave" else role


def encoded(arg: Any) -> Any:
    """A text argument as bytes, as :meth:`RedisClusterNode.commands` decodes replies (the
    hiredis serializer would encode it strictly)."""
    return arg.encode("utf-8", "surrogateescape") if isinstance(arg, str) else arg
