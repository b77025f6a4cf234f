"""Which key judges a bearer token: ours first; the app keys for a token ours did not sign
(an app JWT), or one ours signed for another audience. The reason of each refusal."""

from __future__ import annotations

import time
from typing import Any, cast

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jobprogress_core.app_tokens import AppTokens
from jobprogress_core.credentials import Credential, IdentityPolicy
from jobprogress_core.settings import Settings
from jobprogress_core.tokens import Audience, Tokens

OURS = "our-own-secret-key-of-enough-length-for-hs256"
APP_SECRET = "the-products-own-secret-of-32-chars-or-more"
APP_KEY = ec.generate_private_key(ec.SECP256R1())
APP_PUBLIC = (
    APP_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
IDENTITY = "0123456789abcdef" * 2
TOKENS = Tokens(OURS)


class FakeSettings:
    identity_cookie_days = 1
    production = False


def policy(app_tokens: AppTokens) -> IdentityPolicy:
    return IdentityPolicy(TOKENS, app_tokens, cast(Settings, FakeSettings()))


ENABLED = policy(AppTokens(secret=APP_SECRET, public_key=APP_PUBLIC, max_ttl=3600))
DISABLED = policy(AppTokens())


def app_token(key: Any = APP_SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"aud": "jobprogress", "sub": "alice", "iat": now, "exp": now + 600, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm)


def credential(identity_policy: IdentityPolicy, token: str) -> Credential:
    request = make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"})
    return identity_policy._credential(request)


def outcome(found: Credential) -> tuple[str | None, bool, str | None]:
    return found.identity, found.app, found.refused[1] if found.refused else None


def ours(audience: Audience, ttl: int = 600) -> str:
    return TOKENS.issue(audience, IDENTITY, ttl=ttl, job=IDENTITY)[0]


FORGED = Tokens("y" * 40).issue(Audience.API, IDENTITY, ttl=600)[0]

BOTH = [
    ("ours", ours(Audience.API), (IDENTITY, False, None)),
    ("ours, expired", ours(Audience.API, ttl=-60), (None, False, "token_expired")),
    ("our share link", ours(Audience.SHARE), (None, False, "token_invalid")),
    ("our reporter token", ours(Audience.REPORTER), (None, False, "token_invalid")),
    ("our cookie", ours(Audience.BROWSER), (None, False, "token_invalid")),
    ("garbage", "eyJhbGciOi.not-a-jwt", (None, False, "token_invalid")),
    ("not a token", "not-a-token", (None, False, "token_invalid")),
]
WITH_APP_KEYS = [
    ("app HS256", app_token(), ("app:alice", True, None)),
    ("app ES256", app_token(APP_KEY, "ES256"), ("app:alice", True, None)),
    ("app, expired", app_token(exp=int(time.time()) - 60), (None, False, "token_expired")),
    ("app, not yet valid", app_token(nbf=int(time.time()) + 600), (None, False, "token_not_yet_valid")),
    ("app, too long-lived", app_token(exp=int(time.time()) + 7200), (None, False, "token_too_long_lived")),
    ("app, another key", app_token("x" * 40), (None, False, "token_invalid")),
    ("app, alg none", app_token(None, "none"), (None, False, "token_invalid")),
    ("app, another audience", app_token(aud="someone-else"), (None, False, "token_invalid")),
    ("app, signed with our key", app_token(OURS), (None, False, "token_invalid")),
    ("ours, forged", FORGED, (None, False, "token_invalid")),
]
WITHOUT_APP_KEYS = [
    ("app HS256", app_token(), (None, False, "app_disabled")),
    ("app ES256", app_token(APP_KEY, "ES256"), (None, False, "app_disabled")),
    # Not signed by us: only the app keys could tell, and there are none.
    ("ours, forged", FORGED, (None, False, "app_disabled")),
]


@pytest.mark.parametrize(("name", "token", "expected"), BOTH + WITH_APP_KEYS, ids=lambda v: str(v)[:24])
def test_with_app_keys(name: str, token: str, expected: tuple[str | None, bool, str | None]) -> None:
    assert outcome(credential(ENABLED, token)) == expected, name


@pytest.mark.parametrize(("name", "token", "expected"), BOTH + WITHOUT_APP_KEYS, ids=lambda v: str(v)[:24])
def test_without_app_keys(name: str, token: str, expected: tuple[str | None, bool, str | None]) -> None:
    assert outcome(credential(DISABLED, token)) == expected, name


def test_an_app_secret_equal_to_ours_still_verifies_its_app_tokens() -> None:
    # Ours for another audience, then: tried with the app keys. (One without ``iat`` fails
    # our claims before the audience is checked, and is refused as ours.)
    same = policy(AppTokens(secret=OURS, max_ttl=3600))
    assert outcome(credential(same, app_token(OURS))) == ("app:alice", True, None)
    assert outcome(credential(same, ours(Audience.API))) == (IDENTITY, False, None)
