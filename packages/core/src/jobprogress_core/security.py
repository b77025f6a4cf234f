"""Who is asking, and what they may do with a job.

Identities are random 128-bit ids; nobody logs in. A browser carries its identity in a
signed, HttpOnly, SameSite cookie that the page sets; an API client sends a bearer token
(``POST /api/tokens``). Both are JSON Web Tokens signed with ``JOBPROGRESS_SECRET_KEY``
(HS256), each kind with an audience of its own, so that a cookie value, a bearer token and
a share link can never stand in for one another.

A product that embeds jobprogress may instead sign identities for its own users: app JWTs
(:mod:`.app_tokens`), as bearer tokens, or on the stream as ``?access_token=``; their
identity is ``app:<sub>`` and their scopes bound what they may do. A credential that is
presented and does not verify is a 401, never a silent stranger.

Only a job's owner reads, lists and cancels it; a share link (signed, expiring) grants
reading one job and nothing else. Anyone else gets 404, as if the job did not exist. The
policies plug into aiohttp-security (:func:`setup_security`); handlers call
:func:`require_identity` and :func:`authorize`.
"""

from __future__ import annotations

__all__ = [
    "ACCESS_TOKEN_PARAMETER",
    "APP_TOKENS",
    "CREDENTIAL",
    "IDENTITY_COOKIE",
    "QUERY_TOKEN_ALLOWED",
    "SCOPE_OF",
    "SHARE_PARAMETER",
    "TOKENS",
    "Audience",
    "Credential",
    "InvalidToken",
    "JobAccess",
    "OwnerPolicy",
    "Permission",
    "Tokens",
    "authorize",
    "bearer_token",
    "check_credential",
    "credential_of",
    "identity_of",
    "issue_reporter_token",
    "new_identity",
    "reporter_token_job",
    "require_identity",
    "setup_security",
    "shared_job_id",
]

import enum
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp_security import AbstractAuthorizationPolicy, authorized_userid, permits
from aiohttp_security import setup as aiohttp_security_setup

from .app_tokens import APP_IDENTITY_PREFIX, AppTokens, Scope
from .credentials import (
    ACCESS_TOKEN_PARAMETER,
    CREDENTIAL,
    IDENTITY_COOKIE,
    NO_CREDENTIAL,
    QUERY_TOKEN_ALLOWED,
    Credential,
    IdentityPolicy,
)
from .errors import Forbidden, NotFound, Unauthorized
from .settings import ClientFacingSettings, Settings
from .tokens import IDENTITY_PATTERN, Audience, InvalidToken, Tokens, new_identity

SHARE_PARAMETER = "share"


class Permission(enum.StrEnum):
    READ = "read"
    CANCEL = "cancel"
    SHARE = "share"


#: The scope an app JWT needs for each permission on a job.
SCOPE_OF = {Permission.READ: Scope.READ, Permission.CANCEL: Scope.SUBMIT, Permission.SHARE: Scope.SUBMIT}


@dataclass(frozen=True)
class JobAccess:
    """What a permission is checked against: a job's owner and id, and the job a valid
    share link in the request grants (if any)."""

    owner: str
    job_id: str
    shared_job_id: str | None = None


TOKENS = web.AppKey("tokens", Tokens)
APP_TOKENS = web.AppKey("app_tokens", AppTokens)


class OwnerPolicy(AbstractAuthorizationPolicy):
    """The owner may do anything with a job; a share link grants reading that one job."""

    async def permits(self, identity: str | None, permission: str | enum.Enum, context: Any = None) -> bool:
        if not isinstance(context, JobAccess):
            return False
        if identity is not None and identity == context.owner:
            return True
        return permission == Permission.READ and context.shared_job_id == context.job_id

    async def authorized_userid(self, identity: str) -> str | None:
        return (
            identity if IDENTITY_PATTERN.match(identity) or identity.startswith(APP_IDENTITY_PREFIX) else None
        )


def setup_security(app: web.Application, settings: Settings) -> Tokens:
    tokens = Tokens(str(settings.secret_key))
    app[TOKENS] = tokens
    app_tokens = AppTokens()  # the worker: no app JWT reaches it
    if isinstance(settings, ClientFacingSettings):
        secret = settings.app_jwt_secret
        app_tokens = AppTokens(
            secret=str(secret) if secret is not None else None,
            public_key=settings.app_jwt_public_key,
            max_ttl=settings.app_jwt_max_ttl,
        )
    app[APP_TOKENS] = app_tokens
    aiohttp_security_setup(app, IdentityPolicy(tokens, app_tokens, settings), OwnerPolicy())
    return tokens


async def identity_of(request: web.Request) -> str | None:
    return await authorized_userid(request)


async def credential_of(request: web.Request) -> Credential:
    """What the request presented, verified (once per request: the identity policy keeps it)."""
    if CREDENTIAL not in request:
        await identity_of(request)
    credential: Credential = request.get(CREDENTIAL, NO_CREDENTIAL)
    return credential


async def check_credential(request: web.Request) -> None:
    """401 if the request presented a credential that does not verify: before anything else
    is looked up, so that a bad token learns nothing (not even whether a job exists)."""
    _refuse_invalid(await credential_of(request))


def _refuse_invalid(credential: Credential) -> None:
    if credential.refused is not None:
        message, reason = credential.refused
        raise Unauthorized(message, details={"reason": reason})


def _require_scope(credential: Credential, scope: Scope) -> None:
    if credential.scopes is not None and scope not in credential.scopes:
        raise Forbidden(
            f"This token's scope does not allow this: it needs {scope.value!r}",
            details={"reason": "scope", "scope": scope.value},
        )


async def require_identity(request: web.Request, scope: Scope | None = None) -> str:
    """The caller's identity, allowed ``scope`` if given; 401 if the request has none (or
    presented one that does not verify), 403 if its token's scope does not allow it."""
    identity = await identity_of(request)
    credential = await credential_of(request)
    _refuse_invalid(credential)
    if identity is not None and scope is not None:
        _require_scope(credential, scope)
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
    identity's job exists; 403 for cancelling through a share link, which is read-only, and
    for an owner whose token's scope does not allow ``permission``; 401 for a credential
    that does not verify."""
    credential = await credential_of(request)
    _refuse_invalid(credential)
    if await permits(request, permission, JobAccess(owner=owner, job_id=job_id)):
        _require_scope(credential, SCOPE_OF[permission])
        return  # the owner: a share link beside (even a stale one) does not matter
    shared = shared_job_id(request)
    if shared is not None and await permits(request, permission, JobAccess(owner, job_id, shared)):
        return
    if shared == job_id:
        raise Forbidden("A share link is read-only")
    raise NotFound(f"No job {job_id[:64]!r}")


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
