"""What a request presents to say who it is, and the aiohttp-security identity policy that
verifies it: our bearer token or an app JWT (:mod:`.app_tokens`) in ``Authorization``, an
app JWT in ``?access_token=`` where a header cannot be sent (the stream), or the cookie."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp_security import AbstractIdentityPolicy

from .app_tokens import AppTokenRefused, AppTokens, Scope
from .settings import Settings
from .tokens import IDENTITY_PATTERN, Audience, InvalidToken, Tokens

__all__ = [
    "ACCESS_TOKEN_PARAMETER",
    "CREDENTIAL",
    "IDENTITY_COOKIE",
    "NO_CREDENTIAL",
    "QUERY_TOKEN_ALLOWED",
    "Credential",
    "IdentityPolicy",
]

IDENTITY_COOKIE = "jobprogress_identity"
#: The query parameter that carries an app JWT where a header cannot (EventSource).
ACCESS_TOKEN_PARAMETER = "access_token"


@dataclass(frozen=True)
class Credential:
    """What a request presented to say who it is, once verified."""

    identity: str | None
    #: What it may do; ``None``: anything its identity may (our own cookie and tokens).
    scopes: frozenset[Scope] | None = None
    #: When a bearer credential stops being valid (epoch seconds); ``None`` for the cookie.
    expires_at: float | None = None
    #: An app JWT, which no token of ours may stand in for.
    app: bool = False
    #: A credential was presented and did not verify: why (the message, a reason code).
    refused: tuple[str, str] | None = None


NO_CREDENTIAL = Credential(None)

CREDENTIAL: web.RequestKey[Credential] = web.RequestKey("credential")
#: Set on a request that may carry an app JWT in ``?access_token=`` (the stream).
QUERY_TOKEN_ALLOWED: web.RequestKey[bool] = web.RequestKey("query_token_allowed")


class IdentityPolicy(AbstractIdentityPolicy):
    """A bearer token if the request has an ``Authorization`` header (ours, or an app JWT:
    our key tries it first, then the app keys), else an app JWT in ``?access_token=`` where
    allowed, else the cookie. A request whose credential does not verify has no identity:
    it does not fall back to the cookie."""

    def __init__(self, tokens: Tokens, app_tokens: AppTokens, settings: Settings) -> None:
        self.tokens = tokens
        self.app_tokens = app_tokens
        self.cookie_max_age = settings.identity_cookie_days * 86400
        self.cookie_secure = settings.production

    async def identify(self, request: web.Request) -> str | None:
        """The request's identity, verified once per request (its :class:`Credential` is
        kept in the request)."""
        if CREDENTIAL not in request:
            request[CREDENTIAL] = self._credential(request)
        return request[CREDENTIAL].identity

    def _credential(self, request: web.Request) -> Credential:
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _refused("Authorization must be 'Bearer <token>'", "token_invalid")
            return self._bearer(token.strip())
        query_token = request.query.get(ACCESS_TOKEN_PARAMETER)
        if query_token is not None and request.get(QUERY_TOKEN_ALLOWED):
            return self._app(query_token)
        cookie = request.cookies.get(IDENTITY_COOKIE)
        identity = self.tokens.identity(cookie, Audience.BROWSER) if cookie else None
        return Credential(identity)

    def _bearer(self, token: str) -> Credential:
        """Our bearer token if our key verifies it for the API. A token our key did not sign
        (another key or algorithm) is the app keys' to judge: an app JWT, or refused by them.
        One our key signed for another audience is tried with the app keys too (only an app
        secret equal to ours verifies it); refused by them, it is refused as ours."""
        try:
            claims = self.tokens.read(token, Audience.API)
        except InvalidToken as exc:
            if exc.foreign:
                return self._app(token)
            if exc.other_audience and (app := self._app(token)).refused is None:
                return app
            return _refused(
                f"The bearer token is not valid: {exc}", "token_expired" if exc.expired else "token_invalid"
            )
        if not IDENTITY_PATTERN.match(claims["sub"]):
            return _refused("The bearer token is not valid: no identity in it", "token_invalid")
        return Credential(claims["sub"], expires_at=float(claims["exp"]))

    def _app(self, token: str) -> Credential:
        try:
            app = self.app_tokens.read(token)
        except AppTokenRefused as exc:
            return _refused(str(exc).capitalize(), exc.reason)
        return Credential(app.identity, scopes=app.scopes, expires_at=app.expires_at, app=True)

    async def remember(
        self, request: web.Request, response: web.StreamResponse, identity: str, **kwargs: Any
    ) -> None:
        token, _ = self.tokens.issue(Audience.BROWSER, identity, ttl=self.cookie_max_age)
        response.set_cookie(
            IDENTITY_COOKIE,
            token,
            max_age=self.cookie_max_age,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self.cookie_secure,
        )

    async def forget(self, request: web.Request, response: web.StreamResponse) -> None:
        response.del_cookie(IDENTITY_COOKIE, path="/")


def _refused(message: str, reason: str) -> Credential:
    return Credential(None, refused=(message, reason))
