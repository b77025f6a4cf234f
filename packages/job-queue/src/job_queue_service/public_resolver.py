"""Name resolution for the push sender that only ever answers public addresses.

A push endpoint is a URL a browser handed us, so a host name in it may resolve to an address
of this network (``10.x``, ``127.x``, ``169.254.169.254``). The subscription check refuses such
addresses when they are written as literals; this resolver refuses them when a name resolves
to them, at the moment of connecting, so a name that changes its answer later (DNS
rebinding) is refused too. aiohttp does not resolve an address literal, and the subscription
check has seen those.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["NotPublic", "PublicResolver"]

logger = logging.getLogger(__name__)


class NotPublic(OSError):
    """The host resolves to no public address."""


class PublicResolver(AbstractResolver):
    """The addresses ``inner`` (the default resolver) gives, keeping the public ones only."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        public = [result for result in found if ipaddress.ip_address(result["host"]).is_global]
        if not public:
            addresses = ", ".join(sorted({result["host"] for result in found}))
            logger.warning("push: %s resolves to no public address (%s): not sent", host, addresses)
            raise NotPublic(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self.inner.close()
