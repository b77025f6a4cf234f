"""Web Push subscriptions: what a browser's ``PushSubscription.toJSON()`` gives us, checked,
and kept per identity in Redis (:meth:`jobprogress_core.keys.Keys.push_subscriptions`),
capped, expiring unless renewed.

An endpoint is a URL this service will POST to, so it is checked like one: ``https`` with a
host, never an address of this network (loopback, private, link-local); only in development
may it be ``http://127.0.0.1`` (a test's push service). A host name is checked again where it
resolves, when a message is sent (:mod:`.public_resolver`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from redis.asyncio import Redis

from jobprogress_core.keys import Keys
from jobprogress_core.vapid import b64url_decode

__all__ = ["Subscription", "SubscriptionError", "Subscriptions", "check_endpoint", "parse_subscription"]

MAX_ENDPOINT_LENGTH = 2048


class SubscriptionError(ValueError):
    """Not a usable subscription: ``fields`` names each offending field and why."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__("invalid push subscription")
        self.fields = fields


@dataclass(frozen=True)
class Subscription:
    """Where to push (``endpoint``) and the browser's keys: ``p256dh``, its ECDH P-256 public
    key, and ``auth``, the 16-byte secret, both base64url."""

    endpoint: str
    p256dh: str
    auth: str

    @property
    def id(self) -> str:
        """The endpoint's digest: the subscription's field in its identity's hash."""
        return endpoint_id(self.endpoint)

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def endpoint_id(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()[:32]


def check_endpoint(value: Any, *, development: bool) -> str:
    """``value`` if it is an endpoint we may push to; :class:`ValueError` saying why not."""
    if not isinstance(value, str) or not value:
        raise ValueError("a push service URL is required")
    if len(value) > MAX_ENDPOINT_LENGTH:
        raise ValueError(f"at most {MAX_ENDPOINT_LENGTH} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise ValueError("not a URL") from None
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None or not host or parts.fragment:
        raise ValueError("a URL with a host, without credentials or fragment")
    if parts.scheme == "http" and development and host == "127.0.0.1":
        return value
    if parts.scheme != "https":
        raise ValueError("must be https://")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.rstrip(".")
        if name == "localhost" or name.endswith((".localhost", ".local", ".internal")):
            raise ValueError("must be a public push service") from None
        return value
    if not address.is_global:
        raise ValueError("must be a public push service")
    return value


def parse_subscription(data: Any, *, development: bool) -> Subscription:
    """The subscription of a ``PushSubscription`` JSON: ``{endpoint, keys: {p256dh, auth}}``
    (``expirationTime`` and anything else ignored)."""
    if not isinstance(data, dict):
        raise SubscriptionError({"_schema": ["a JSON object {endpoint, keys: {p256dh, auth}}"]})
    errors: dict[str, Any] = {}
    try:
        endpoint = check_endpoint(data.get("endpoint"), development=development)
    except ValueError as exc:
        errors["endpoint"] = [str(exc)]
    keys = data.get("keys")
    if not isinstance(keys, dict):
        errors["keys"] = ["an object {p256dh, auth}"]
        raise SubscriptionError(errors)
    key_errors: dict[str, list[str]] = {}
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not _is_p256_point(p256dh):
        key_errors["p256dh"] = ["the browser's P-256 public key: 65 bytes, base64url"]
    if not _decodes_to(auth, 16):
        key_errors["auth"] = ["the browser's auth secret: 16 bytes, base64url"]
    if key_errors:
        errors["keys"] = key_errors
    if errors:
        raise SubscriptionError(errors)
    assert isinstance(p256dh, str) and isinstance(auth, str)
    return Subscription(endpoint, p256dh.rstrip("="), auth.rstrip("="))


def _decodes_to(value: Any, size: int) -> bool:
    if not isinstance(value, str) or len(value) > 200:
        return False
    try:
        return len(b64url_decode(value)) == size
    except ValueError:
        return False


def _is_p256_point(value: Any) -> bool:
    if not _decodes_to(value, 65):
        return False
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(value))
    except ValueError:
        return False
    return True


class Subscriptions:
    """Each identity's subscriptions: a hash per identity, at most ``cap`` (adding one more
    drops the oldest), expiring ``ttl`` seconds after the last one was added."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl: int, cap: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.cap = cap

    async def add(self, identity: str, subscription: Subscription) -> None:
        key = self.keys.push_subscriptions(identity)
        value = json.dumps({**subscription.to_json(), "added": time.time()}, separators=(",", ":"))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, subscription.id, value)
            pipe.expire(key, self.ttl)
            pipe.hgetall(key)
            *_, stored = await pipe.execute()
        if len(stored) > self.cap:
            by_age = sorted(stored, key=lambda field: _added(stored[field]))
            await self.redis.hdel(key, *by_age[: len(stored) - self.cap])

    async def remove(self, identity: str, endpoint: str) -> bool:
        """Forget the subscription of ``endpoint``; whether there was one."""
        return bool(await self.redis.hdel(self.keys.push_subscriptions(identity), endpoint_id(endpoint)))

    async def of(self, identity: str) -> list[Subscription]:
        stored: dict[str, str] = await self.redis.hgetall(self.keys.push_subscriptions(identity))  # type: ignore[assignment]
        found = []
        for value in stored.values():
            data = json.loads(value)
            found.append(Subscription(data["endpoint"], data["keys"]["p256dh"], data["keys"]["auth"]))
        return found


def _added(value: str) -> float:
    return float(json.loads(value).get("added", 0))
