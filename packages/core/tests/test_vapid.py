"""The VAPID key as the settings read it, and the VAPID settings' validation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jobprogress_core.settings import ConfigError, Settings
from jobprogress_core.vapid import (
    VapidKeyError,
    b64url,
    b64url_decode,
    public_key_b64url,
    vapid_private_key,
)

ENV = {"JOBPROGRESS_SECRET_KEY": "x" * 40}


def _forms(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.private_numbers().private_value.to_bytes(32, "big")
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {"raw": b64url(numbers), "pkcs8": pkcs8.decode(), "sec1": sec1.decode(), "der": b64url(der)}


def test_every_form_of_a_key_reads_as_the_same_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    expected = public_key_b64url(key)
    for form, text in _forms(key).items():
        assert public_key_b64url(vapid_private_key(text)) == expected, form
    point = b64url_decode(expected)
    assert len(point) == 65 and point[0] == 4


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        b64url(b"\x00" * 32),
        b64url(b"\x01" * 31),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END",
    ],
)
def test_what_is_not_a_p256_key_is_refused(text: str) -> None:
    with pytest.raises(VapidKeyError):
        vapid_private_key(text)


def test_a_key_of_another_curve_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(VapidKeyError, match="P-256"):
        vapid_private_key(other.decode())


def test_b64url_refuses_standard_base64() -> None:
    assert b64url_decode(b64url(b"\xfb\xff")) == b"\xfb\xff"
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode("+/8")


def test_push_is_off_without_keys_and_on_with_both() -> None:
    off = Settings.from_env("job-queue-service", ENV)
    assert not off.push_enabled and off.vapid_subject is None
    key = _forms(ec.generate_private_key(ec.SECP256R1()))["raw"]
    on = Settings.from_env(
        "job-queue-service",
        ENV | {"JOBPROGRESS_VAPID_PRIVATE_KEY": key, "JOBPROGRESS_VAPID_SUBJECT": "mailto:ops@example.com"},
    )
    assert on.push_enabled and on.vapid_subject == "mailto:ops@example.com"
    assert key not in repr(on)
    assert on.push_ttl == 86_400 and on.push_subscriptions_per_identity == 10


def test_a_key_file_is_read(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "vapid.pem"  # type: ignore[operator]
    path.write_text(_forms(ec.generate_private_key(ec.SECP256R1()))["pkcs8"])
    settings = Settings.from_env(
        "job-queue-service",
        ENV
        | {
            "JOBPROGRESS_VAPID_PRIVATE_KEY": f"@{path}",
            "JOBPROGRESS_VAPID_SUBJECT": "https://example.com/ops",
        },
    )
    assert str(settings.vapid_private_key).startswith("-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOBPROGRESS_VAPID_SUBJECT": "mailto:a@b.c"}, "JOBPROGRESS_VAPID_PRIVATE_KEY is missing"),
        ({"JOBPROGRESS_VAPID_PRIVATE_KEY": "KEY"}, "JOBPROGRESS_VAPID_SUBJECT is missing"),
        (
            {"JOBPROGRESS_VAPID_PRIVATE_KEY": "nope", "JOBPROGRESS_VAPID_SUBJECT": "mailto:a@b.c"},
            "not a usable key",
        ),
        ({"JOBPROGRESS_VAPID_PRIVATE_KEY": "KEY", "JOBPROGRESS_VAPID_SUBJECT": "ops@example.com"}, "mailto:"),
        (
            {"JOBPROGRESS_VAPID_PRIVATE_KEY": "KEY", "JOBPROGRESS_VAPID_SUBJECT": "http://example.com"},
            "mailto:",
        ),
    ],
)
def test_bad_vapid_settings_stop_the_start(env: dict[str, str], message: str) -> None:
    key = _forms(ec.generate_private_key(ec.SECP256R1()))["raw"]
    env = {name: key if value == "KEY" else value for name, value in env.items()}
    with pytest.raises(ConfigError, match=message):
        Settings.from_env("job-queue-service", ENV | env)
