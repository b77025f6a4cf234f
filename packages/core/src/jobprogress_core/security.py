"""Who is asking, and what they may do with a job.

Identities are random 128-bit ids; nobody logs in. A browser carries its identity in a
signed, HttpOnly, SameSite cookie that the page sets; an API client sends a bearer token
(``POST /api/tokens``). Both are JSON Web Tokens signed with ``JOBPROGRESS_SECRET_KEY``
(HS256), each kind with an audience of its own, so that a cookie value, a bearer token and
a share link can never stand in for one another.

Only a job's owner reads, lists and cancels it; a share link (signed, expiring) grants
reading one job and nothing else. Anyone else gets 404, as if the job did not exist. The
policies plug into aiohttp-security (:func:`setup_security`); handlers call
:func:`require_identity` and :func:`authorize`.
"""

from __future__ import annotations

import enum
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from aiohttp import hdrs, web
from aiohttp_security import AbstractAuthorizationPolicy, AbstractIdentityPolicy, authorized_userid, permits
from aiohttp_security import setup as aiohttp_security_setup

from .errors import Forbidden, Handler, NotFound, Unauthorized
from .settings import Settings

IDENTITY_COOKIE = "jobprogress_identity"
SHARE_PARAMETER = "share"
SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS, hdrs.METH_TRACE})

_IDENTITY = re.compile(r"\A[0-9a-f]{32}\Z")
_ALGORITHM = "HS256"
_LEEWAY_SECONDS = 5


class Audience(enum.StrEnum):
    BROWSER = "jobprogress:browser"
    API = "jobprogress:api"
    SHARE = "jobprogress:share"
    REPORTER = "jobprogress:reporter"


class Permission(enum.StrEnum):
    READ = "read"
    CANCEL = "cancel"
    SHARE = "share"


class InvalidToken(Exception):
    """A token that is malformed, forged, for another use, or expired (``expired``)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def new_identity() -> str:
    return secrets.token_hex(16)


class Tokens:
    """Issues and reads the signed tokens of every kind (see :class:`Audience`)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def issue(self, audience: Audience, subject: str, *, ttl: float, **claims: Any) -> tuple[str, int]:
        """A token for ``subject``, valid for ``ttl`` seconds; the token and its expiry (epoch s)."""
        now = int(time.time())
        expires = now + int(ttl)
        payload = {"aud": audience.value, "sub": subject, "iat": now, "exp": expires, **claims}
        return jwt.encode(payload, self._secret, algorithm=_ALGORITHM), expires

    def read(self, token: str, audience: Audience) -> dict[str, Any]:
        """The claims of a valid token of ``audience``; :class:`InvalidToken` otherwise."""
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
            raise InvalidToken(f"invalid token: {exc}") from None
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
        return subject if _IDENTITY.match(subject) else None


@dataclass(frozen=True)
class JobAccess:
    """What a permission is checked against: a job's owner and id, and the job a valid
    share link in the request grants (if any)."""

    owner: str
    job_id: str
    shared_job_id: str | None = None


TOKENS = web.AppKey("tokens", Tokens)
IDENTITY: web.RequestKey[str | None] = web.RequestKey("identity")


class IdentityPolicy(AbstractIdentityPolicy):
    """A bearer token if the request has an ``Authorization`` header, else the cookie.

    A request with a bearer token that does not verify has no identity: it does not fall
    back to the cookie."""

    def __init__(self, tokens: Tokens, settings: Settings) -> None:
        self.tokens = tokens
        self.cookie_max_age = settings.identity_cookie_days * 86400
        self.cookie_secure = settings.production

    async def identify(self, request: web.Request) -> str | None:
        """The request's identity, verified once per request."""
        if IDENTITY in request:
            return request[IDENTITY]
        identity = request[IDENTITY] = self._identify(request)
        return identity

    def _identify(self, request: web.Request) -> str | None:
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return self.tokens.identity(token.strip(), Audience.API)
        cookie = request.cookies.get(IDENTITY_COOKIE)
        return self.tokens.identity(cookie, Audience.BROWSER) if cookie else None

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


class OwnerPolicy(AbstractAuthorizationPolicy):
    """The owner may do anything with a job; a share link grants reading that one job."""

    async def permits(self, identity: str | None, permission: str | enum.Enum, context: Any = None) -> bool:
        if not isinstance(context, JobAccess):
            return False
        if identity is not None and identity == context.owner:
            return True
        return permission == Permission.READ and context.shared_job_id == context.job_id

    async def authorized_userid(self, identity: str) -> str | None:
        return identity if _IDENTITY.match(identity) else None


def setup_security(app: web.Application, settings: Settings) -> Tokens:
    tokens = Tokens(str(settings.secret_key))
    app[TOKENS] = tokens
    aiohttp_security_setup(app, IdentityPolicy(tokens, settings), OwnerPolicy())
    return tokens


async def identity_of(request: web.Request) -> str | None:
    return await authorized_userid(request)


async def require_identity(request: web.Request) -> str:
    """The caller's identity; 401 if the request has none."""
    identity = await identity_of(request)
    if identity is None:
        raise Unauthorized(
            "No identity: open the page (it sets a cookie) or send 'Authorization: Bearer <token>' "
            "(POST /api/tokens issues one)"
        )
    return identity


def shared_job_id(request: web.Request) -> str | None:
    """The job a ``?share=`` token in the request grants reading; ``None`` without one.
    A share token that is forged or expired is refused (403), whatever the job."""
    token = request.query.get(SHARE_PARAMETER)
    if token is None:
        return None
    try:
        claims = request.app[TOKENS].read(token, Audience.SHARE)
    except InvalidToken as exc:
        if exc.expired:
            raise Forbidden("This share link has expired", details={"reason": "share_expired"}) from None
        raise Forbidden("This share link is not valid", details={"reason": "share_invalid"}) from None
    job_id = claims.get("job")
    return job_id if isinstance(job_id, str) else None


async def authorize(request: web.Request, permission: Permission, *, owner: str, job_id: str) -> None:
    """404 unless the caller may ``permission`` the job, so that nobody learns that another
    identity's job exists; 403 for cancelling through a share link, which is read-only."""
    if await permits(request, permission, JobAccess(owner=owner, job_id=job_id)):
        return  # the owner: a share link beside (even a stale one) does not matter
    shared = shared_job_id(request)
    if shared is not None and await permits(request, permission, JobAccess(owner, job_id, shared)):
        return
    if shared == job_id:
        raise Forbidden("A share link is read-only")
    raise NotFound(f"No job {job_id[:64]!r}")


@web.middleware
async def same_origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unsafe requests from a browser must come from this origin (no cross-site forgery).

    A browser names the page's origin in ``Origin`` (or at least ``Sec-Fetch-Site``) on every
    unsafe request; it must be this host. A request with neither is not from a current
    browser (a script, the CLI) and passes, unless it carries the identity cookie: that is
    what a forged request would ride on, so without proof of its origin it is refused."""
    if request.method in SAFE_METHODS:
        return await handler(request)
    origin = request.headers.get(hdrs.ORIGIN)
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None:
        try:
            parts = urlsplit(origin)
        except ValueError:  # "http://[::1" and the like: no origin at all
            allowed = False
        else:
            allowed = parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
    elif site is not None:
        allowed = site in ("same-origin", "none")
    else:
        allowed = IDENTITY_COOKIE not in request.cookies
    if not allowed:
        raise Forbidden(
            "Cross-site request refused: unsafe requests must come from this site's own pages",
            details={"origin": (origin or "")[:200], "reason": "cross_site"},
        )
    return await handler(request)


#: Every response, of every service: no inline script or style may run on the page, nothing
#: is framed or sniffed, and no URL (a share link's token) leaks through ``Referer``.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: :data:`SECURITY_HEADERS` on every response, streams and
    errors included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def issue_reporter_token(tokens: Tokens, job_id: str, *, ttl: float) -> tuple[str, int]:
    """A reporter token: appending events to job ``job_id`` for ``ttl`` seconds, nothing else
    (its audience is no identity's, so it reads, lists and cancels nothing)."""
    return tokens.issue(Audience.REPORTER, job_id, ttl=ttl, job=job_id)


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; ``None`` without the header.
    Any other scheme, or an empty token, is refused (401)."""
    authorization = request.headers.get(hdrs.AUTHORIZATION)
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'")
    return token.strip()


def reporter_token_job(tokens: Tokens, token: str) -> str:
    """The job a reporter token may report to; 401 for a token that is forged, expired, or
    of another kind."""
    try:
        claims = tokens.read(token, Audience.REPORTER)
    except InvalidToken as exc:
        if exc.expired:
            raise Unauthorized("The reporter token has expired (it lasts the job's time limit)") from None
        raise Unauthorized("The reporter token is not valid") from None
    job_id = claims.get("job")
    if not isinstance(job_id, str) or job_id != claims["sub"]:
        raise Unauthorized("The reporter token is not valid")
    return job_id
