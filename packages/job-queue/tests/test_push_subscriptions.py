"""Which push subscriptions are taken, and how they are kept per identity."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from job_queue_service.push_subscriptions import (
    Subscription,
    SubscriptionError,
    Subscriptions,
    check_endpoint,
    parse_subscription,
)
from jobprogress_core.keys import Keys
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.vapid import b64url


def browser_keys() -> dict[str, str]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {"p256dh": b64url(point), "auth": b64url(os.urandom(16))}


def subscription_json(endpoint: str = "https://push.example.com/send/abc", **keys: Any) -> dict[str, Any]:
    return {"endpoint": endpoint, "expirationTime": None, "keys": {**browser_keys(), **keys}}


def test_a_browser_subscription_is_taken() -> None:
    data = subscription_json()
    subscription = parse_subscription(data, development=False)
    assert subscription.to_json() == {"endpoint": data["endpoint"], "keys": data["keys"]}
    assert len(subscription.id) == 32


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.com/x",  # not https
        "https://127.0.0.1/x",  # this machine
        "https://10.1.2.3/x",  # this network
        "https://[::1]/x",
        "https://localhost/x",
        "https://localhost./x",
        "https://api.localhost/x",
        "https://user:pw@push.example.com/x",
        "ftp://push.example.com/x",
        "https:///x",
        "https://push.example.com/" + "x" * 2048,
        "",
    ],
)
def test_endpoints_we_must_not_post_to_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        check_endpoint(endpoint, development=True)


def test_plain_http_to_this_machine_only_in_development() -> None:
    assert check_endpoint("http://127.0.0.1:8999/push/1", development=True)
    with pytest.raises(ValueError, match="https"):
        check_endpoint("http://127.0.0.1:8999/push/1", development=False)
    with pytest.raises(ValueError, match="https"):
        check_endpoint("http://10.0.0.1:8999/push/1", development=True)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (subscription_json(p256dh=b64url(b"\x04" + b"\x01" * 64)), "keys"),  # not a point on P-256
        (subscription_json(p256dh=b64url(os.urandom(33))), "keys"),  # compressed size
        (subscription_json(auth=b64url(os.urandom(8))), "keys"),
        (subscription_json(auth="not base64url!"), "keys"),
        ({"endpoint": "https://push.example.com/x"}, "keys"),
        (subscription_json("http://push.example.com/x"), "endpoint"),
    ],
)
def test_bad_keys_and_endpoints_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SubscriptionError) as caught:
        parse_subscription(data, development=False)
    assert field in caught.value.fields


def test_not_an_object_is_refused() -> None:
    with pytest.raises(SubscriptionError):
        parse_subscription(["https://push.example.com/x"], development=False)


async def test_subscriptions_are_kept_per_identity_capped_and_expiring(
    jobprogress_settings: Callable[..., Settings],
) -> None:
    settings = jobprogress_settings()
    redis = create_redis(settings)
    keys = Keys(settings.key_prefix, settings.partitions)
    store = Subscriptions(redis, keys, ttl=600, cap=2)
    try:
        subs = [parse_subscription(subscription_json(f"https://push.example.com/{n}"), development=False)
                for n in range(3)]  # fmt: skip
        for sub in subs:
            await store.add("alice", sub)
        await store.add("alice", subs[2])  # again: renewed, not doubled
        assert {sub.endpoint for sub in await store.of("alice")} == {subs[1].endpoint, subs[2].endpoint}
        assert await store.of("bob") == []
        assert 0 < await redis.ttl(keys.push_subscriptions("alice")) <= 600
        assert await store.remove("alice", subs[1].endpoint)
        assert not await store.remove("alice", subs[1].endpoint)
        assert await store.of("alice") == [Subscription(subs[2].endpoint, subs[2].p256dh, subs[2].auth)]
    finally:
        await redis.aclose()
