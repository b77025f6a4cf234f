"""Sending one Web Push message: encrypted for the subscription (RFC 8291, ``aes128gcm``),
signed with our VAPID key (RFC 8292), POSTed to its push service (RFC 8030) with ``TTL``,
``Topic`` and ``Urgency``.

The JWT is signed here (PyJWT, ES256) and the body encrypted by http-ece, with a new
ECDH key and salt per message, as RFC 8291 asks.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from jobprogress_core.vapid import b64url, b64url_decode, public_key_b64url

from .push_subscriptions import Subscription

__all__ = ["JWT_LIFETIME", "MAX_PLAINTEXT", "Outcome", "Vapid", "encrypt", "send", "topic_of"]

#: How long a VAPID JWT is valid (RFC 8292: at most 24 h).
JWT_LIFETIME = 12 * 3600
#: A push service need only take 4096 bytes of body: one aes128gcm record of this much text.
MAX_PLAINTEXT = 3993
URGENCIES = ("very-low", "low", "normal", "high")


class Outcome(enum.StrEnum):
    """What became of a message; the label of ``jobprogress_push_messages_total``."""

    SENT = "sent"
    #: 404/410: the subscription is no more; it is forgotten.
    GONE = "gone"
    FAILED = "failed"


@dataclass(frozen=True)
class Vapid:
    """Our VAPID identity: the private key and the contact (``sub``) push services see."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    subject: str
    public_key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", public_key_b64url(self.key))

    def authorization(self, endpoint: str, *, now: float | None = None) -> str:
        """The ``Authorization`` header for a push to ``endpoint``: its origin is the JWT's
        ``aud``."""
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(now if now is not None else time.time()) + JWT_LIFETIME,
            "sub": self.subject,
        }
        token = jwt.encode(claims, self.key, algorithm="ES256")
        return f"vapid t={token},k={self.public_key}"


def encrypt(plaintext: bytes, subscription: Subscription) -> bytes:
    """``plaintext`` as the subscription's browser alone can read it: one ``aes128gcm``
    record keyed by ECDH between a new key of ours and its ``p256dh``, and its ``auth``."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"a push message carries at most {MAX_PLAINTEXT} bytes, not {len(plaintext)}")
    body: bytes = http_ece.encrypt(
        plaintext,
        salt=os.urandom(16),
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=b64url_decode(subscription.p256dh),
        auth_secret=b64url_decode(subscription.auth),
        version="aes128gcm",
    )
    return body


def topic_of(job_id: str) -> str:
    """A ``Topic`` for the job (at most 32 base64url characters): a newer message of the
    same job replaces one still waiting in the push service."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,32}", job_id):
        return job_id
    return b64url(hashlib.sha256(job_id.encode()).digest())[:32]


async def send(
    session: aiohttp.ClientSession,
    vapid: Vapid,
    subscription: Subscription,
    plaintext: bytes,
    *,
    ttl: int,
    topic: str,
    urgency: str = "normal",
    timeout: float = 10.0,
) -> tuple[Outcome, str]:
    """Push ``plaintext`` to the subscription; what became of it and why (the status or the
    error, for the log). Never raises for the push service's sake."""
    headers = {
        "Authorization": vapid.authorization(subscription.endpoint),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "TTL": str(ttl),
        "Topic": topic,
        "Urgency": urgency if urgency in URGENCIES else "normal",
    }
    body = encrypt(plaintext, subscription)
    try:
        async with asyncio.timeout(timeout):
            async with session.post(
                subscription.endpoint, data=body, headers=headers, allow_redirects=False
            ) as reply:
                status = reply.status  # the body, unread, is dropped with the connection
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        return Outcome.FAILED, f"{cause.__class__.__name__}: {cause}"[:200]
    if 200 <= status < 300:
        return Outcome.SENT, str(status)
    if status in (404, 410):
        return Outcome.GONE, str(status)
    return Outcome.FAILED, f"HTTP {status}"
