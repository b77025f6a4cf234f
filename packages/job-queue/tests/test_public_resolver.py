"""The push sender connects to public addresses only, whatever a host name resolves to."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from job_queue_service.public_resolver import NotPublic, PublicResolver
from job_queue_service.push_subscriptions import Subscription
from job_queue_service.webpush import Outcome, Vapid, send
from jobprogress_core.vapid import b64url
from jobprogress_testing import free_port


class Answers(AbstractResolver):
    """A name server with fixed answers."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_only_the_public_addresses_of_a_name_are_kept() -> None:
    resolver = PublicResolver(Answers("10.0.0.7", "93.184.215.14", "169.254.169.254", "2606:4700::1"))
    assert [result["host"] for result in await resolver.resolve("push.example.com", 443)] == [
        "93.184.215.14",
        "2606:4700::1",
    ]


@pytest.mark.parametrize("addresses", [("127.0.0.1",), ("10.1.2.3", "192.168.0.9"), ("::1", "fd00::2"), ()])
async def test_a_name_with_no_public_address_is_refused(addresses: tuple[str, ...]) -> None:
    with pytest.raises(NotPublic, match="no public address"):
        await PublicResolver(Answers(*addresses)).resolve("push.example.com", 443)


async def test_a_push_to_a_name_of_this_machine_never_connects() -> None:
    """``localhost`` resolved by the system (``/etc/hosts``): the sender gives up before any
    connection, and says why."""
    port, connections = free_port(), 0

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", port)
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    endpoint = f"https://localhost:{port}/push/1"
    subscription = Subscription(endpoint, b64url(point), b64url(b"0123456789abcdef"))
    vapid = Vapid(ec.generate_private_key(ec.SECP256R1()), "mailto:ops@example.com")
    connector = aiohttp.TCPConnector(resolver=PublicResolver())
    async with server, aiohttp.ClientSession(connector=connector) as session:
        outcome, why = await send(session, vapid, subscription, b"{}", ttl=60, topic="t")
    assert outcome is Outcome.FAILED
    assert "no public address" in why
    assert connections == 0
