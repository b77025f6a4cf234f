"""One Web Push message: its VAPID header and its encryption, checked by independent code
(py-vapid's verifier, http-ece's decryption with the browser's private key)."""

from __future__ import annotations

import json
import os
import time

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from job_queue_service.push_sender import job_message
from job_queue_service.push_subscriptions import Subscription
from job_queue_service.webpush import JWT_LIFETIME, MAX_PLAINTEXT, Vapid, encrypt, topic_of
from jobprogress_core.model import Job, JobStatus
from jobprogress_core.vapid import b64url


def browser() -> tuple[ec.EllipticCurvePrivateKey, bytes, Subscription]:
    key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return key, auth, Subscription("https://push.example.com:8443/send/1", b64url(point), b64url(auth))


def test_the_message_is_readable_by_the_browser_alone() -> None:
    key, auth, subscription = browser()
    body = encrypt(b'{"jobId":"j"}', subscription)
    assert http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm") == b'{"jobId":"j"}'
    other, _, _ = browser()
    with pytest.raises(Exception):  # noqa: B017, PT011 - http-ece raises what cryptography does
        http_ece.decrypt(body, private_key=other, auth_secret=auth, version="aes128gcm")
    assert encrypt(b"same", subscription) != encrypt(b"same", subscription)  # a new key and salt each


def test_a_message_too_long_for_one_record_is_refused() -> None:
    _, _, subscription = browser()
    with pytest.raises(ValueError, match="at most"):
        encrypt(b"x" * (MAX_PLAINTEXT + 1), subscription)


def test_the_vapid_header_verifies_with_our_public_key() -> None:
    vapid = Vapid(ec.generate_private_key(ec.SECP256R1()), "mailto:ops@example.com")
    now = time.time()
    header = vapid.authorization("https://push.example.com:8443/send/1?x=y", now=now)
    assert Vapid02.verify(header)
    token = header.split("t=", 1)[1].split(",", 1)[0]
    assert header.endswith(f",k={vapid.public_key}")
    claims = jwt.decode(
        token, vapid.key.public_key(), algorithms=["ES256"], audience="https://push.example.com:8443"
    )
    assert claims["sub"] == "mailto:ops@example.com"
    assert claims["exp"] == int(now) + JWT_LIFETIME <= now + 86_400
    assert "EllipticCurvePrivateKey" not in repr(vapid) and repr(vapid).startswith("Vapid(subject=")


def test_topics_are_short_and_url_safe() -> None:
    assert topic_of("0123456789abcdef0123456789abcdef") == "0123456789abcdef0123456789abcdef"
    long = topic_of("x" * 100)
    assert len(long) <= 32 and long.replace("-", "").replace("_", "").isalnum()


def test_a_job_message_fits_one_push_whatever_its_result() -> None:
    job = Job.new("build", {}, owner="o", name="Nightly", total_steps=1)
    ended = job.__class__(**{**job.__dict__, "status": JobStatus.FAILED, "error": "é" * 5000})
    data = job_message(ended)
    assert len(data) <= MAX_PLAINTEXT
    message = json.loads(data)
    assert message["jobId"] == job.id and message["status"] == "FAILED" and message["name"] == "Nightly"
    assert message["url"] == f"/client/index.html?job={job.id}" and message["error"].startswith("éé")
    assert "result" not in message
