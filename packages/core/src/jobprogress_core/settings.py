"""Typed settings read from the environment and validated at start.

A bad value raises :class:`ConfigError` naming the variable, so a misconfigured
process stops at once with a message an operator can act on.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .model import BUILTIN_JOB_TYPES

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {
    "job-queue-service": 8081,
    "worker-service": 8082,
    "progress-service": 8083,
}
ENVIRONMENTS = ("development", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)


def _masked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Environ:
    """Typed access to environment variables; every error names the variable."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not an integer") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={number} is outside {minimum}..{maximum}")
        return number

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a number") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={number} is outside {minimum}..{maximum}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean (true/false)")

    def redis_url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"{name}={_masked_url(value)!r} must start with redis://, rediss:// or unix://")
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(f"{name}={_masked_url(value)!r} has no host")
        try:
            parts.port  # noqa: B018 - urlsplit validates the port lazily
        except ValueError:
            raise ConfigError(f"{name}={_masked_url(value)!r} has an invalid port") from None
        return value

    def host_port(self, name: str, default: str) -> tuple[str, int, str]:
        """``host:port`` or ``scheme://host:port``, as Consul's own CLI accepts."""
        value = self.text(name, default)
        parsed = urlsplit(value if "//" in value else f"//{value}")
        scheme = parsed.scheme or "http"
        try:
            port = parsed.port
        except ValueError:
            raise ConfigError(f"{name}={value!r} has an invalid port") from None
        if not parsed.hostname or scheme not in ("http", "https"):
            raise ConfigError(f"{name}={value!r} is not host:port or http(s)://host:port")
        return parsed.hostname, port or (443 if scheme == "https" else 8500), scheme


@dataclass(frozen=True)
class Settings:
    """Everything a service reads from its environment.

    Field names mirror the variables in the README's configuration table.
    """

    service: str
    redis_url: str = field(repr=False)
    consul_host: str
    consul_port: int
    consul_scheme: str
    consul_token: Secret | None
    host: str
    port: int
    advertise_addr: str
    env: str
    secret_key: Secret
    key_prefix: str
    log_level: str
    log_json: bool
    shutdown_timeout: float
    # identities and share links
    identity_cookie_days: int
    token_ttl: int
    share_ttl: int
    share_max_ttl: int
    # limits, shared by all instances through Redis
    submissions_per_minute: int
    new_identities_per_minute: int
    streams_per_identity: int
    trusted_proxy_hops: int
    # Consul registration
    consul_check_interval: float
    consul_deregister_after: str
    consul_retry_seconds: float
    # Redis
    redis_timeout: float
    event_stream_maxlen: int
    retention_seconds: int
    history_limit: int
    job_types: tuple[str, ...]
    # worker-service
    handlers: str | None
    worker_concurrency: int
    worker_block_ms: int
    visibility_timeout: float
    max_attempts: int
    job_time_limit: float
    grace_seconds: float
    redis_outage_grace: float
    # progress-service
    sse_retry_ms: int
    sse_heartbeat_seconds: float
    sse_send_timeout: float
    sse_queue_size: int
    sse_buffer_bytes: int
    reader_block_ms: int
    max_streams: int
    sse_idle_timeout: float
    sse_max_lifetime: float
    redis_pool_size: int
    web_dir: str | None

    def __post_init__(self) -> None:
        if self.share_ttl > self.share_max_ttl:
            raise ConfigError(
                f"JOBPROGRESS_SHARE_TTL_SECONDS={self.share_ttl} is above "
                f"JOBPROGRESS_SHARE_MAX_TTL_SECONDS={self.share_max_ttl}"
            )

    @property
    def redis_url_masked(self) -> str:
        return _masked_url(self.redis_url)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings:
        if service not in DEFAULT_PORTS:
            raise ConfigError(f"unknown service {service!r}")
        env = Environ(environ)
        consul_host, consul_port, consul_scheme = env.host_port("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
        consul_token = env.raw("CONSUL_HTTP_TOKEN")
        host = env.text("JOBPROGRESS_HOST", "127.0.0.1")
        mode = env.choice("JOBPROGRESS_ENV", "development", ENVIRONMENTS)
        return cls(
            service=service,
            redis_url=env.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0"),
            consul_host=consul_host,
            consul_port=consul_port,
            consul_scheme=consul_scheme,
            consul_token=Secret(consul_token) if consul_token else None,
            host=host,
            port=env.integer("JOBPROGRESS_PORT", DEFAULT_PORTS[service], minimum=1, maximum=65535),
            advertise_addr=env.raw("JOBPROGRESS_ADVERTISE_ADDR") or _advertisable(host),
            env=mode,
            secret_key=_secret_key(env, mode),
            key_prefix=_key_prefix(env),
            log_level=env.choice("JOBPROGRESS_LOG_LEVEL", "INFO", LOG_LEVELS),
            log_json=env.flag("JOBPROGRESS_LOG_JSON", False),
            shutdown_timeout=env.number("JOBPROGRESS_SHUTDOWN_TIMEOUT", 10.0, minimum=0.0, maximum=600.0),
            identity_cookie_days=env.integer(
                "JOBPROGRESS_IDENTITY_COOKIE_DAYS", 365, minimum=1, maximum=3650
            ),
            token_ttl=env.integer(
                "JOBPROGRESS_TOKEN_TTL_SECONDS", 30 * 86_400, minimum=60, maximum=3650 * 86_400
            ),
            share_ttl=env.integer("JOBPROGRESS_SHARE_TTL_SECONDS", 86_400, minimum=60, maximum=365 * 86_400),
            share_max_ttl=env.integer(
                "JOBPROGRESS_SHARE_MAX_TTL_SECONDS", 7 * 86_400, minimum=60, maximum=365 * 86_400
            ),
            submissions_per_minute=env.integer(
                "JOBPROGRESS_SUBMISSIONS_PER_MINUTE", 60, minimum=1, maximum=1_000_000
            ),
            new_identities_per_minute=env.integer(
                "JOBPROGRESS_NEW_IDENTITIES_PER_MINUTE", 20, minimum=1, maximum=1_000_000
            ),
            streams_per_identity=env.integer(
                "JOBPROGRESS_STREAMS_PER_IDENTITY", 20, minimum=1, maximum=1_000_000
            ),
            trusted_proxy_hops=env.integer("JOBPROGRESS_TRUSTED_PROXY_HOPS", 0, minimum=0, maximum=10),
            consul_check_interval=env.number(
                "JOBPROGRESS_CONSUL_CHECK_INTERVAL", 10.0, minimum=0.5, maximum=3600.0
            ),
            consul_deregister_after=_duration(env, "JOBPROGRESS_CONSUL_DEREGISTER_AFTER", "1m"),
            consul_retry_seconds=env.number(
                "JOBPROGRESS_CONSUL_RETRY_SECONDS", 5.0, minimum=0.1, maximum=600.0
            ),
            redis_timeout=env.number("JOBPROGRESS_REDIS_TIMEOUT", 5.0, minimum=0.1, maximum=300.0),
            event_stream_maxlen=env.integer(
                "JOBPROGRESS_EVENT_STREAM_MAXLEN", 10_000, minimum=100, maximum=10_000_000
            ),
            retention_seconds=env.integer(
                "JOBPROGRESS_RETENTION_SECONDS", 86_400, minimum=60, maximum=365 * 86_400
            ),
            history_limit=env.integer("JOBPROGRESS_HISTORY_LIMIT", 1000, minimum=10, maximum=100_000),
            job_types=_job_types(env),
            handlers=_import_path(env, "JOBPROGRESS_HANDLERS"),
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
            sse_retry_ms=env.integer("JOBPROGRESS_SSE_RETRY_MS", 3000, minimum=100, maximum=600_000),
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
            redis_pool_size=env.integer("JOBPROGRESS_REDIS_POOL_SIZE", 16, minimum=1, maximum=1000),
            web_dir=env.raw("JOBPROGRESS_WEB_DIR"),
        )


#: Listen addresses that mean "every interface".
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _advertisable(host: str) -> str:
    """The address others reach us at: the listen host, or for a wildcard listen address
    (``0.0.0.0`` in a container) the address this machine's hostname resolves to."""
    if host not in WILDCARD_HOSTS:
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


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


def _import_path(env: Environ, name: str) -> str | None:
    value = env.raw(name)
    if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
        raise ConfigError(f"{name}={value!r} is not an import path like mypackage.jobs:handlers")
    return value


def _key_prefix(env: Environ) -> str:
    prefix = env.text("JOBPROGRESS_KEY_PREFIX", "jobprogress:")
    if any(char in prefix for char in "{}\r\n ") or len(prefix) > 64:
        raise ConfigError(
            f"JOBPROGRESS_KEY_PREFIX={prefix!r} must be at most 64 characters without braces or spaces"
        )
    return prefix


def _duration(env: Environ, name: str, default: str) -> str:
    value = env.text(name, default)
    units = {"s": 1, "m": 60, "h": 3600}
    if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit():
        raise ConfigError(f"{name}={value!r} is not a duration like 90s, 1m or 2h")
    return value


def _secret_key(env: Environ, mode: str) -> Secret:
    """``JOBPROGRESS_SECRET_KEY``. A value starting with ``change-me`` is a placeholder (the
    compose file's default): development uses it as it is, so that instances share it;
    production refuses it, as it refuses a missing or short key."""
    value = env.raw("JOBPROGRESS_SECRET_KEY")
    placeholder = value is not None and value.startswith("change-me")
    if mode == "production" and (value is None or placeholder):
        reason = "is missing" if value is None else "is the default value"
        raise ConfigError(
            f"JOBPROGRESS_SECRET_KEY {reason}: production mode needs a random secret of 32+ characters"
        )
    if value is None:
        logger.warning("JOBPROGRESS_SECRET_KEY is not set: using a random key for this process (development)")
        return Secret(secrets.token_urlsafe(32))
    if placeholder:
        logger.warning("JOBPROGRESS_SECRET_KEY is a placeholder: fine for development, refused in production")
    if mode == "production" and len(value) < 32:
        raise ConfigError("JOBPROGRESS_SECRET_KEY is too short: production mode needs 32+ characters")
    return Secret(value)
