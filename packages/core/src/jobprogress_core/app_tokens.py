"""Identities the product's own backend signs: app JWTs (SPEC, "Your users, your jobs").

A product that embeds jobprogress has users of its own, logged in to it, not to us. Its
backend signs a JWT for its user, with ``JOBPROGRESS_APP_JWT_SECRET`` (HS256) or the private
half of ``JOBPROGRESS_APP_JWT_PUBLIC_KEY`` (RS256 for an RSA key, ES256 for a P-256 one):

- ``aud``: ``jobprogress``;
- ``sub``: the product's user id, 1 to 128 printable characters;
- ``exp``: required, at most ``JOBPROGRESS_APP_JWT_MAX_TTL`` seconds ahead;
- ``nbf`` and ``iat``: checked when present;
- ``scope``: what the token may do, space-separated of ``submit``, ``read`` and ``report``
  (default ``submit read``).

The identity is ``app:<sub>``: that user owns what it submits, from any device. Everything
else fails closed: an algorithm not configured (``none``, or HS256 when only a public key
is: a token "signed" with the public key as an HMAC secret), another audience, a missing
claim, an unknown scope.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = [
    "APP_AUDIENCE",
    "APP_IDENTITY_PREFIX",
    "DEFAULT_SCOPES",
    "AppCredential",
    "AppTokenRefused",
    "AppTokens",
    "Scope",
    "public_key_algorithm",
]

APP_AUDIENCE = "jobprogress"
APP_IDENTITY_PREFIX = "app:"
MAX_SUBJECT_LENGTH = 128
_LEEWAY_SECONDS = 5


class Scope(enum.StrEnum):
    SUBMIT = "submit"  # submit jobs, and cancel and share one's own
    READ = "read"  # read one's own jobs: status, list, stream
    REPORT = "report"  # report the events of one's own external jobs


DEFAULT_SCOPES = frozenset({Scope.SUBMIT, Scope.READ})


class AppTokenRefused(Exception):
    """An app JWT that does not verify; ``reason`` is a short code for the JSON error."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AppCredential:
    """What a valid app JWT grants: an identity, its scopes, until when (epoch seconds)."""

    identity: str
    scopes: frozenset[Scope]
    expires_at: float


def public_key_algorithm(pem: str) -> tuple[str, Any]:
    """The JWT algorithm of a PEM public key and the key: RS256 (RSA) or ES256 (P-256).
    ``ValueError`` for anything else."""
    key = load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too short (2048 at least)")
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    raise ValueError("not an RSA or P-256 (ES256) public key")


class AppTokens:
    """Verifies app JWTs with the keys configured; none configured, none verifies."""

    def __init__(
        self, *, secret: str | None = None, public_key: str | None = None, max_ttl: int = 86_400
    ) -> None:
        self._keys: dict[str, Any] = {}
        if secret is not None:
            self._keys["HS256"] = secret
        if public_key is not None:
            algorithm, key = public_key_algorithm(public_key)
            self._keys[algorithm] = key
        self.max_ttl = max_ttl

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def read(self, token: str) -> AppCredential:
        """The credential of a valid token; :class:`AppTokenRefused` otherwise."""
        if not self._keys:
            raise AppTokenRefused(
                "app tokens are not accepted here (no app key is configured)", "app_disabled"
            )
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except (jwt.InvalidTokenError, UnicodeError, ValueError):
            raise AppTokenRefused("the app token is malformed", "token_invalid") from None
        if not isinstance(algorithm, str) or algorithm not in self._keys:
            raise AppTokenRefused(
                f"app tokens signed with {str(algorithm)[:20]!r} are not accepted", "token_invalid"
            )
        key = self._keys[algorithm]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=APP_AUDIENCE,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["aud", "sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AppTokenRefused("the app token has expired", "token_expired") from None
        except jwt.ImmatureSignatureError:
            raise AppTokenRefused("the app token is not valid yet", "token_not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise AppTokenRefused(
                f"the app token is not for audience {APP_AUDIENCE!r}", "token_invalid"
            ) from None
        except (jwt.InvalidTokenError, UnicodeError, ValueError) as exc:
            raise AppTokenRefused(f"the app token is not valid: {exc}", "token_invalid") from None
        expires_at = float(claims["exp"])
        if expires_at - time.time() > self.max_ttl + _LEEWAY_SECONDS:
            raise AppTokenRefused(
                f"the app token expires more than {self.max_ttl} s ahead (JOBPROGRESS_APP_JWT_MAX_TTL)",
                "token_too_long_lived",
            )
        return AppCredential(f"{APP_IDENTITY_PREFIX}{_subject(claims)}", _scopes(claims), expires_at)


def _subject(claims: dict[str, Any]) -> str:
    subject = claims["sub"]
    if (
        not isinstance(subject, str)
        or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH
        or not subject.isprintable()
    ):
        raise AppTokenRefused(
            f"the app token's sub must be 1 to {MAX_SUBJECT_LENGTH} printable characters", "token_invalid"
        )
    return subject


def _scopes(claims: dict[str, Any]) -> frozenset[Scope]:
    if "scope" not in claims:
        return DEFAULT_SCOPES
    scope = claims["scope"]
    names = scope.split() if isinstance(scope, str) else None
    known = {item.value for item in Scope}
    if not names or any(name not in known for name in names):
        raise AppTokenRefused(
            "the app token's scope must be space-separated names of: submit, read, report", "token_invalid"
        )
    return frozenset(Scope(name) for name in names)
