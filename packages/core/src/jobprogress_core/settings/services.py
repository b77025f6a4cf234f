"""Each service's own settings: the base :class:`~.base.Settings` plus only what that
service reads besides, so that it validates every variable it reads and no other."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..app_tokens import public_key_algorithm
from ..model import BUILTIN_JOB_TYPES
from ..vapid import VapidKeyError, vapid_private_key
from .base import Settings
from .environ import ConfigError, Environ, Secret

__all__ = [
    "ClientFacingSettings",
    "JobQueueSettings",
    "ProgressSettings",
    "WorkerSettings",
]


@dataclass(frozen=True)
class ClientFacingSettings(Settings):
    """What the services that clients call (job-queue, progress) read besides: the limit on
    new identities per client address (``jobprogress_core.limits.mint_identity``), how
    to find that address behind reverse proxies, and the keys of app JWTs
    (:mod:`jobprogress_core.app_tokens`)."""

    new_identities_per_minute: int
    trusted_proxy_hops: int
    app_jwt_secret: Secret | None = field(repr=False)
    app_jwt_public_key: str | None = field(repr=False)
    app_jwt_max_ttl: int

    @classmethod
    def _values(cls, env: Environ, service: str) -> dict[str, Any]:
        return super()._values(env, service) | dict(
            new_identities_per_minute=env.integer(
                "JOBPROGRESS_NEW_IDENTITIES_PER_MINUTE", 20, minimum=1, maximum=1_000_000
            ),
            trusted_proxy_hops=env.integer("JOBPROGRESS_TRUSTED_PROXY_HOPS", 0, minimum=0, maximum=10),
            app_jwt_secret=_app_jwt_secret(env),
            app_jwt_public_key=_app_jwt_public_key(env),
            app_jwt_max_ttl=env.integer(
                "JOBPROGRESS_APP_JWT_MAX_TTL", 86_400, minimum=60, maximum=30 * 86_400
            ),
        )


@dataclass(frozen=True)
class JobQueueSettings(ClientFacingSettings, service="job-queue-service"):
    """job-queue-service: submissions, bearer tokens, share links, the job types it accepts,
    external jobs (their time limit, reports per job, the sweeper that ends stalled ones)."""

    submissions_per_minute: int
    token_ttl: int
    share_ttl: int
    share_max_ttl: int
    job_types: tuple[str, ...]
    external_time_limit: float
    reports_per_minute: int
    external_sweep_seconds: float
    #: Web Push (RFC 8292 VAPID): both set, or neither (push is off).
    vapid_private_key: Secret | None = field(repr=False)
    vapid_subject: str | None
    push_ttl: int
    push_subscription_ttl: int
    push_subscriptions_per_identity: int

    @property
    def push_enabled(self) -> bool:
        return self.vapid_private_key is not None

    def __post_init__(self) -> None:
        if self.share_ttl > self.share_max_ttl:
            raise ConfigError(
                f"JOBPROGRESS_SHARE_TTL_SECONDS={self.share_ttl} is above "
                f"JOBPROGRESS_SHARE_MAX_TTL_SECONDS={self.share_max_ttl}"
            )

    @classmethod
    def _values(cls, env: Environ, service: str) -> dict[str, Any]:
        return super()._values(env, service) | dict(
            submissions_per_minute=env.integer(
                "JOBPROGRESS_SUBMISSIONS_PER_MINUTE", 60, minimum=1, maximum=1_000_000
            ),
            token_ttl=env.integer(
                "JOBPROGRESS_TOKEN_TTL_SECONDS", 30 * 86_400, minimum=60, maximum=3650 * 86_400
            ),
            share_ttl=env.integer("JOBPROGRESS_SHARE_TTL_SECONDS", 86_400, minimum=60, maximum=365 * 86_400),
            share_max_ttl=env.integer(
                "JOBPROGRESS_SHARE_MAX_TTL_SECONDS", 7 * 86_400, minimum=60, maximum=365 * 86_400
            ),
            job_types=_job_types(env),
            external_time_limit=env.number(
                "JOBPROGRESS_EXTERNAL_TIME_LIMIT", 90_000.0, minimum=1.0, maximum=30 * 86_400.0
            ),
            reports_per_minute=env.integer(
                "JOBPROGRESS_REPORTS_PER_MINUTE", 600, minimum=1, maximum=1_000_000
            ),
            external_sweep_seconds=env.number(
                "JOBPROGRESS_EXTERNAL_SWEEP_SECONDS", 5.0, minimum=0.1, maximum=3600.0
            ),
            **_vapid(env),
            push_ttl=env.integer("JOBPROGRESS_PUSH_TTL_SECONDS", 86_400, minimum=0, maximum=28 * 86_400),
            push_subscription_ttl=env.integer(
                "JOBPROGRESS_PUSH_SUBSCRIPTION_TTL_SECONDS", 30 * 86_400, minimum=60, maximum=365 * 86_400
            ),
            push_subscriptions_per_identity=env.integer(
                "JOBPROGRESS_PUSH_SUBSCRIPTIONS_PER_IDENTITY", 10, minimum=1, maximum=100
            ),
        )


@dataclass(frozen=True)
class WorkerSettings(Settings, service="worker-service"):
    """worker-service: the job code, the consumer loop, attempts, time limits and stopping."""

    handlers: str | None
    worker_concurrency: int
    worker_block_ms: int
    visibility_timeout: float
    max_attempts: int
    job_time_limit: float
    grace_seconds: float
    redis_outage_grace: float

    @classmethod
    def _values(cls, env: Environ, service: str) -> dict[str, Any]:
        return super()._values(env, service) | dict(
            handlers=env.import_path("JOBPROGRESS_HANDLERS"),
            worker_concurrency=env.integer("JOBPROGRESS_WORKER_CONCURRENCY", 4, minimum=1, maximum=1000),
            worker_block_ms=env.integer("JOBPROGRESS_WORKER_BLOCK_MS", 5000, minimum=10, maximum=60_000),
            visibility_timeout=env.number(
                "JOBPROGRESS_VISIBILITY_TIMEOUT", 30.0, minimum=1.0, maximum=3600.0
            ),
            max_attempts=env.integer("JOBPROGRESS_MAX_ATTEMPTS", 3, minimum=1, maximum=100),
            job_time_limit=env.number(
                "JOBPROGRESS_JOB_TIME_LIMIT", 90_000.0, minimum=1.0, maximum=30 * 86_400.0
            ),
            grace_seconds=env.number("JOBPROGRESS_GRACE_SECONDS", 20.0, minimum=0.0, maximum=3600.0),
            redis_outage_grace=env.number(
                "JOBPROGRESS_REDIS_OUTAGE_GRACE", 120.0, minimum=0.0, maximum=3600.0
            ),
        )


@dataclass(frozen=True)
class ProgressSettings(ClientFacingSettings, service="progress-service"):
    """progress-service: the streams (SSE, their limits and lifetimes), the fan-out reader, the page."""

    streams_per_identity: int
    sse_retry_ms: int
    sse_retry_max_ms: int
    sse_setups_per_second: int
    sse_heartbeat_seconds: float
    sse_send_timeout: float
    sse_queue_size: int
    sse_buffer_bytes: int
    reader_block_ms: int
    max_streams: int
    sse_idle_timeout: float
    sse_max_lifetime: float
    web_dir: str | None
    cors_origins: tuple[str, ...]
    image_origins: tuple[str, ...]

    @classmethod
    def _values(cls, env: Environ, service: str) -> dict[str, Any]:
        return super()._values(env, service) | dict(
            streams_per_identity=env.integer(
                "JOBPROGRESS_STREAMS_PER_IDENTITY", 20, minimum=1, maximum=1_000_000
            ),
            **_retry_range(env),
            sse_setups_per_second=env.integer(
                "JOBPROGRESS_SSE_SETUPS_PER_SECOND", 5000, minimum=1, maximum=10_000_000
            ),
            sse_heartbeat_seconds=env.number(
                "JOBPROGRESS_SSE_HEARTBEAT_SECONDS", 15.0, minimum=0.1, maximum=3600.0
            ),
            sse_send_timeout=env.number("JOBPROGRESS_SSE_SEND_TIMEOUT", 10.0, minimum=0.1, maximum=600.0),
            sse_queue_size=env.integer("JOBPROGRESS_SSE_QUEUE_SIZE", 256, minimum=1, maximum=100_000),
            sse_buffer_bytes=env.integer(
                "JOBPROGRESS_SSE_BUFFER_BYTES", 256 * 1024, minimum=1024, maximum=64 * 1024 * 1024
            ),
            reader_block_ms=env.integer("JOBPROGRESS_READER_BLOCK_MS", 5000, minimum=10, maximum=60_000),
            max_streams=env.integer("JOBPROGRESS_MAX_STREAMS", 20_000, minimum=1, maximum=1_000_000),
            sse_idle_timeout=env.number(
                "JOBPROGRESS_SSE_IDLE_TIMEOUT", 600.0, minimum=0.5, maximum=7 * 86_400.0
            ),
            sse_max_lifetime=env.number(
                "JOBPROGRESS_SSE_MAX_LIFETIME", 3600.0, minimum=1.0, maximum=7 * 86_400.0
            ),
            web_dir=env.raw("JOBPROGRESS_WEB_DIR"),
            cors_origins=_origins(env, "JOBPROGRESS_CORS_ORIGINS"),
            image_origins=_origins(env, "JOBPROGRESS_IMAGE_ORIGINS"),
        )


def _retry_range(env: Environ) -> dict[str, int]:
    """``JOBPROGRESS_SSE_RETRY_MS`` to ``JOBPROGRESS_SSE_RETRY_MAX_MS``: the range each
    stream's ``retry:`` is drawn from."""
    low = env.integer("JOBPROGRESS_SSE_RETRY_MS", 2000, minimum=100, maximum=600_000)
    high = env.integer("JOBPROGRESS_SSE_RETRY_MAX_MS", min(2 * low, 600_000), minimum=100, maximum=600_000)
    if high < low:
        raise ConfigError(
            f"JOBPROGRESS_SSE_RETRY_MAX_MS={high} is below JOBPROGRESS_SSE_RETRY_MS={low}: "
            "give the top of the range each stream's retry: is drawn from"
        )
    return {"sse_retry_ms": low, "sse_retry_max_ms": high}


def _job_types(env: Environ) -> tuple[str, ...]:
    value = env.raw("JOBPROGRESS_JOB_TYPES")
    if value is None:
        return BUILTIN_JOB_TYPES
    types = tuple(part.strip() for part in value.split(",") if part.strip())
    if not types or any(not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", name) for name in types):
        raise ConfigError(
            f"JOBPROGRESS_JOB_TYPES={value!r} must be a comma-separated list of names like build, data-import"
        )
    return types


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origins(env: Environ, name: str) -> tuple[str, ...]:
    """A comma-separated list of origins (``scheme://host[:port]``, as a browser's ``Origin``
    names them: lower case, no default port), never a wildcard; none when unset."""
    value = env.raw(name)
    if value is None:
        return ()
    origins: list[str] = []
    for part in (part.strip() for part in value.split(",")):
        if not part:
            continue
        origin = _origin(part)
        if origin is None:
            raise ConfigError(
                f"{name}: {part[:100]!r} is not an origin: "
                "give scheme://host[:port] (http or https; no path, no wildcard)"
            )
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def _origin(text: str) -> str | None:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if (
        parts.scheme.lower() not in _DEFAULT_PORTS
        or not host
        or "*" in text
        or parts.username is not None
        or parts.path not in ("", "/")
        or "?" in text
        or "#" in text
        or not re.fullmatch(r"[a-z0-9.:\[\]-]+", parts.netloc.lower().rsplit("@", 1)[-1])
    ):
        return None
    scheme = parts.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


def _vapid(env: Environ) -> dict[str, Any]:
    """``JOBPROGRESS_VAPID_PRIVATE_KEY`` (a P-256 private key: PEM, ``@/path/to/key.pem``, or
    its 32 bytes in base64url) and ``JOBPROGRESS_VAPID_SUBJECT`` (``mailto:`` or ``https:``,
    the contact a push service may write to): both, or neither."""
    value = env.text_or_file("JOBPROGRESS_VAPID_PRIVATE_KEY")
    subject = env.raw("JOBPROGRESS_VAPID_SUBJECT")
    if value is None and subject is None:
        return {"vapid_private_key": None, "vapid_subject": None}
    if value is None or subject is None:
        missing = "JOBPROGRESS_VAPID_SUBJECT" if value else "JOBPROGRESS_VAPID_PRIVATE_KEY"
        raise ConfigError(f"{missing} is missing: Web Push needs both VAPID settings, or neither")
    try:
        vapid_private_key(value)
    except VapidKeyError as exc:
        raise ConfigError(f"JOBPROGRESS_VAPID_PRIVATE_KEY is not a usable key: {exc}") from None
    if not re.fullmatch(r"mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?", subject):
        raise ConfigError(
            f"JOBPROGRESS_VAPID_SUBJECT={subject[:100]!r} must be mailto:address or an https:// URL"
        )
    return {"vapid_private_key": Secret(value), "vapid_subject": subject}


def _app_jwt_secret(env: Environ) -> Secret | None:
    value = env.raw("JOBPROGRESS_APP_JWT_SECRET")
    if value is None:
        return None
    if len(value) < 32:
        raise ConfigError("JOBPROGRESS_APP_JWT_SECRET is too short: an HS256 key of 32+ characters")
    return Secret(value)


def _app_jwt_public_key(env: Environ) -> str | None:
    """``JOBPROGRESS_APP_JWT_PUBLIC_KEY``: a PEM public key, RSA (RS256) or P-256 (ES256);
    the PEM itself, or ``@/path/to/key.pem``."""
    value = env.text_or_file("JOBPROGRESS_APP_JWT_PUBLIC_KEY")
    if value is None:
        return None
    try:
        public_key_algorithm(value)
    except ValueError as exc:
        raise ConfigError(f"JOBPROGRESS_APP_JWT_PUBLIC_KEY is not a usable public key: {exc}") from None
    return value
