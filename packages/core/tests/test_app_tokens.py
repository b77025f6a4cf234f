"""App JWTs, as a product's backend signs them: what verifies and every way one must not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from jobprogress_core.app_tokens import AppTokenRefused, AppTokens, Scope, public_key_algorithm
from jobprogress_core.settings import ConfigError, Settings

SECRET = "an-app-secret-of-more-than-thirty-two-characters"
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC = (
    EC_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"aud": "jobprogress", "sub": "user-42", "iat": now, "exp": now + 600}
    return {key: value for key, value in {**base, **overrides}.items() if value is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def es256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), EC_KEY, algorithm="ES256")


TOKENS = AppTokens(secret=SECRET, public_key=EC_PUBLIC, max_ttl=3600)


def test_a_valid_token_is_its_users_identity_with_its_scopes() -> None:
    for token in (hs256(), es256()):
        credential = TOKENS.read(token)
        assert credential.identity == "app:user-42"
        assert credential.scopes == {Scope.SUBMIT, Scope.READ}
    assert TOKENS.read(hs256(scope="read report")).scopes == {Scope.READ, Scope.REPORT}
    assert TOKENS.read(hs256(aud=["other", "jobprogress"])).identity == "app:user-42"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (hs256(aud="someone-else"), "token_invalid"),
        (hs256(exp=int(time.time()) - 60), "token_expired"),
        (hs256(nbf=int(time.time()) + 600), "token_not_yet_valid"),
        (hs256(exp=None), "token_invalid"),
        (hs256(sub=None), "token_invalid"),
        (hs256(aud=None), "token_invalid"),
        (hs256(exp=int(time.time()) + 7200), "token_too_long_lived"),
        (
            jwt.encode(claims(), "another-secret-of-more-than-thirty-two-chars", algorithm="HS256"),
            "token_invalid",
        ),
        (jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"), "token_invalid"),
        (jwt.encode(claims(), key=None, algorithm="none"), "token_invalid"),
        (hs256(scope="submit admin"), "token_invalid"),
        (hs256(scope=""), "token_invalid"),
        (hs256(scope=["read"]), "token_invalid"),
        (hs256(sub=""), "token_invalid"),
        (hs256(sub="x" * 129), "token_invalid"),
        (hs256(sub="a\x00b"), "token_invalid"),
        (hs256(sub="line\nbreak"), "token_invalid"),
        (hs256(sub=42), "token_invalid"),
        ("not.a.token", "token_invalid"),
        ("", "token_invalid"),
    ],
)
def test_refused(token: str, reason: str) -> None:
    with pytest.raises(AppTokenRefused) as refused:
        TOKENS.read(token)
    assert refused.value.reason == reason


def test_hs256_signed_with_the_public_key_is_refused_when_only_a_public_key_is_set() -> None:
    only_public = AppTokens(public_key=EC_PUBLIC)

    # PyJWT itself refuses a PEM as an HMAC key: signed by hand, as an attacker would.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(EC_PUBLIC.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(AppTokenRefused) as refused:
        only_public.read(f"{header}.{payload}.{b64(signature)}")
    assert refused.value.reason == "token_invalid"
    assert only_public.read(es256()).identity == "app:user-42"


def test_nothing_verifies_when_no_key_is_set() -> None:
    with pytest.raises(AppTokenRefused) as refused:
        AppTokens().read(hs256())
    assert refused.value.reason == "app_disabled"


def test_the_keys_are_checked_at_start_naming_the_variable() -> None:
    env = {"JOBPROGRESS_APP_JWT_SECRET": "short"}
    with pytest.raises(ConfigError, match="JOBPROGRESS_APP_JWT_SECRET"):
        Settings.from_env("job-queue-service", env)
    with pytest.raises(ConfigError, match="JOBPROGRESS_APP_JWT_PUBLIC_KEY"):
        Settings.from_env("progress-service", {"JOBPROGRESS_APP_JWT_PUBLIC_KEY": "-----BEGIN nothing"})
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pem = small.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="too short"):
        public_key_algorithm(pem.decode())
    settings = Settings.from_env("progress-service", {"JOBPROGRESS_APP_JWT_PUBLIC_KEY": EC_PUBLIC})
    assert settings.app_jwt_public_key == EC_PUBLIC.strip() and "BEGIN" not in repr(settings)
    # The worker never sees an app JWT: it does not read (nor refuse) the variables.
    assert not hasattr(Settings.from_env("worker-service", env), "app_jwt_secret")
