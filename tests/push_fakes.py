"""A push service and a browser's push keys, played by the tests (tests/test_push.py,
tests/test_notifications.py), and the stack with VAPID keys they run against. The fixtures
are imported by those modules."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jobprogress_core.vapid import b64url
from jobprogress_testing import Stack

SUBJECT = "mailto:ops@example.com"
PUSH_TTL = 600


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class PushService:
    """Answers ``POST /push/ok/{n}`` 201 and ``POST /push/gone/{n}`` 410, keeping every request."""

    received: list[Received] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.path, dict(request.headers), await request.read()))
        if request.match_info["kind"] == "gone":
            return web.Response(status=410)
        return web.Response(status=201, headers={"Location": f"{request.path}/message"})


@dataclass
class Browser:
    """A browser's side of a subscription: its ECDH key and auth secret."""

    key: ec.EllipticCurvePrivateKey
    auth: bytes
    endpoint: str

    @classmethod
    def new(cls, endpoint: str) -> Browser:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16), endpoint)

    def subscription(self) -> dict[str, Any]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)}}  # fmt: skip

    def read(self, body: bytes) -> Any:
        return json.loads(
            http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm")
        )


@pytest.fixture
async def push_service(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[PushService, TestServer]:
    service = PushService()
    app = web.Application()
    app.router.add_post("/push/{kind}/{n}", service.handle)
    return service, await aiohttp_server(app, host="127.0.0.1")


@pytest.fixture
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def push_stack(jobprogress_make_stack: Any, vapid_key: ec.EllipticCurvePrivateKey) -> Stack:
    pem = vapid_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    stack: Stack = jobprogress_make_stack(
        JOBPROGRESS_VAPID_PRIVATE_KEY=pem,
        JOBPROGRESS_VAPID_SUBJECT=SUBJECT,
        JOBPROGRESS_PUSH_TTL_SECONDS=str(PUSH_TTL),
    )
    return stack
