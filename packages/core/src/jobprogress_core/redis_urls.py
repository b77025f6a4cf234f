"""``REDIS_URL`` for a Redis Cluster: ``redis+cluster://`` (TLS: ``rediss+cluster://``)
naming one or more comma-separated startup nodes, with credentials as usual:
``redis+cluster://user:pass@10.0.0.1:7000,10.0.0.2:7000/``. The client learns the rest of
the cluster from any one of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["CLUSTER_SCHEMES", "ClusterUrl", "is_cluster_url"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterUrl:
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> ClusterUrl:
        """The startup nodes and credentials of a cluster URL; :class:`ValueError` saying
        what is wrong (never showing the password)."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in CLUSTER_SCHEMES:
            raise ValueError(f"must start with {' or '.join(s + '://' for s in CLUSTER_SCHEMES)}")
        if parts.path not in ("", "/"):
            raise ValueError("a cluster has database 0 only: no path after the nodes")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        nodes = tuple(_node(part) for part in hosts.split(","))
        return cls(
            nodes=nodes,
            username=unquote(username) or None,
            password=unquote(password) or None,
            tls=parts.scheme.lower() == "rediss+cluster",
        )


def _node(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = text.strip(), str(DEFAULT_PORT)
    host = host.removeprefix("[").removesuffix("]")  # an IPv6 address in brackets
    if not host:
        raise ValueError(f"startup node {text!r} has no host")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"startup node {text!r} has an invalid port")
    return host, int(port)
