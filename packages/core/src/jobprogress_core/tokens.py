"""The signed tokens of jobprogress itself: identity cookies, bearer tokens and share links,
JSON Web Tokens signed with ``JOBPROGRESS_SECRET_KEY`` (HS256), each kind with an audience of
its own so that none can stand in for another."""

from __future__ import annotations

import enum
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt

__all__ = ["IDENTITY_PATTERN", "Audience", "InvalidToken", "Tokens", "new_identity"]

#: An identity of ours: 32 lowercase hex digits.
IDENTITY_PATTERN = re.compile(r"\A[0-9a-f]{32}\Z")
_ALGORITHM = "HS256"
_LEEWAY_SECONDS = 5


class Audience(enum.StrEnum):
    BROWSER = "jobprogress:browser"
    API = "jobprogress:api"
    SHARE = "jobprogress:share"
    REPORTER = "jobprogress:reporter"  # one external job's events, write-only


class InvalidToken(Exception):
    """A token that is malformed, forged, for another use, or expired (``expired``).
    ``foreign``: not signed with our key (another key or algorithm), so perhaps someone
    else's token; ``other_audience``: signed with our key, for another use."""

    def __init__(
        self, message: str, *, expired: bool = False, foreign: bool = False, other_audience: bool = False
    ) -> None:
        super().__init__(message)
        self.expired = expired
        self.foreign = foreign
        self.other_audience = other_audience


def new_identity() -> str:
    return secrets.token_hex(16)


#: Tokens whose signature was verified, kept per process (see :meth:`Tokens.read`).
VERIFIED_CACHE_SIZE = 4096


class Tokens:
    """Issues and reads the signed tokens of every kind (see :class:`Audience`).

    A client sends the same bearer token or cookie with every request, and checking its
    signature is most of what reading it costs. So a token read once is kept (up to
    :data:`VERIFIED_CACHE_SIZE` of them, the least recently read dropped first) with its claims, and read
    again from there while it has not expired: its signature, audience and claims were
    checked, and only the time has moved on. ``clock`` is the time of that check."""

    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        self._verified: dict[tuple[str, Audience], dict[str, Any]] = {}

    def issue(self, audience: Audience, subject: str, *, ttl: float, **claims: Any) -> tuple[str, int]:
        """A token for ``subject``, valid for ``ttl`` seconds; the token and its expiry (epoch s)."""
        now = int(time.time())
        expires = now + int(ttl)
        payload = {"aud": audience.value, "sub": subject, "iat": now, "exp": expires, **claims}
        return jwt.encode(payload, self._secret, algorithm=_ALGORITHM), expires

    def read(self, token: str, audience: Audience) -> dict[str, Any]:
        """The claims of a valid token of ``audience``; :class:`InvalidToken` otherwise."""
        key = (token, audience)
        claims = self._verified.pop(key, None)
        if claims is None:
            claims = self._verify(token, audience)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the least recently read
        elif self._clock() >= claims["exp"] + _LEEWAY_SECONDS:
            raise InvalidToken("token has expired", expired=True)
        self._verified[key] = claims  # last in the order again
        return dict(claims)

    def _verify(self, token: str, audience: Audience) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=audience.value,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["aud", "sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token has expired", expired=True) from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(
                f"invalid token: {exc}",
                foreign=isinstance(exc, jwt.InvalidSignatureError | jwt.InvalidAlgorithmError),
                other_audience=isinstance(exc, jwt.InvalidAudienceError),
            ) from None
        except (UnicodeError, ValueError):  # bytes no token is made of (a header in latin-1)
            raise InvalidToken("invalid token: not ASCII") from None
        if not isinstance(claims["sub"], str):
            raise InvalidToken("invalid token: subject is not a string")
        return claims

    def identity(self, token: str, audience: Audience) -> str | None:
        """The identity a cookie or bearer token carries, or ``None`` if it carries none."""
        try:
            subject = str(self.read(token, audience)["sub"])
        except InvalidToken:
            return None
        return subject if IDENTITY_PATTERN.match(subject) else None
