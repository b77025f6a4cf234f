"""What every service reads from its environment: :class:`Settings`, the base of each
service's own settings (:mod:`.services`), and :meth:`Settings.from_env`, which reads them."""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

from ..keys import DEFAULT_PARTITIONS, MAX_PARTITIONS
from .environ import ConfigError, Environ, Secret, masked_url

if TYPE_CHECKING:
    from .services import JobQueueSettings, ProgressSettings, WorkerSettings

__all__ = ["DEFAULT_PORTS", "ENVIRONMENTS", "LOG_LEVELS", "WILDCARD_HOSTS", "Settings"]

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {
    "job-queue-service": 8081,
    "worker-service": 8082,
    "progress-service": 8083,
}
ENVIRONMENTS = ("development", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Listen addresses that mean "every interface".
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Settings:
    """What every service reads from its environment: Redis and the bounds of the store on
    it, Consul, where it listens, its mode, its secret and identities, logging, stopping.

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
    #: Jobs spread over this many partitions (hash tags); set once per deployment.
    partitions: int
    log_level: str
    log_json: bool
    shutdown_timeout: float
    #: The page's cookie: every service's base app installs the identity policy that sets it.
    identity_cookie_days: int
    # Consul registration
    consul_check_interval: float
    consul_deregister_after: str
    consul_retry_seconds: float
    # Redis, and the bounds of the store on it
    redis_timeout: float
    redis_pool_size: int
    #: Replicas that must confirm a job's creation and end, and how long to wait for them.
    redis_wait_replicas: int
    redis_wait_ms: int
    event_stream_maxlen: int
    retention_seconds: int
    history_limit: int

    #: Each service's own settings class, by service name: a subclass declared with
    #: ``service=`` is the one :meth:`from_env` makes for that service.
    _of_service: ClassVar[dict[str, type[Settings]]] = {}

    def __init_subclass__(cls, *, service: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if service is not None:
            Settings._of_service[service] = cls

    @property
    def redis_url_masked(self) -> str:
        return masked_url(self.redis_url)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @overload
    @classmethod
    def from_env(
        cls, service: Literal["job-queue-service"], environ: Mapping[str, str] | None = None
    ) -> JobQueueSettings: ...
    @overload
    @classmethod
    def from_env(
        cls, service: Literal["worker-service"], environ: Mapping[str, str] | None = None
    ) -> WorkerSettings: ...
    @overload
    @classmethod
    def from_env(
        cls, service: Literal["progress-service"], environ: Mapping[str, str] | None = None
    ) -> ProgressSettings: ...
    @overload
    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings: ...
    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``service``, of its own class, read from ``environ`` (default: the
        process's environment)."""
        kind = Settings._of_service.get(service)
        if kind is None:
            raise ConfigError(f"unknown service {service!r}")
        return kind(**kind._values(Environ(environ), service))

    @classmethod
    def _values(cls, env: Environ, service: str) -> dict[str, Any]:
        """The values of this class's fields, read from ``env`` (a subclass adds its own)."""
        consul_host, consul_port, consul_scheme = env.host_port("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
        consul_token = env.raw("CONSUL_HTTP_TOKEN")
        host = env.text("JOBPROGRESS_HOST", "127.0.0.1")
        mode = env.choice("JOBPROGRESS_ENV", "development", ENVIRONMENTS)
        return dict(
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
            partitions=env.integer(
                "JOBPROGRESS_PARTITIONS", DEFAULT_PARTITIONS, minimum=1, maximum=MAX_PARTITIONS
            ),
            log_level=env.choice("JOBPROGRESS_LOG_LEVEL", "INFO", LOG_LEVELS),
            log_json=env.flag("JOBPROGRESS_LOG_JSON", False),
            shutdown_timeout=env.number("JOBPROGRESS_SHUTDOWN_TIMEOUT", 10.0, minimum=0.0, maximum=600.0),
            identity_cookie_days=env.integer(
                "JOBPROGRESS_IDENTITY_COOKIE_DAYS", 365, minimum=1, maximum=3650
            ),
            consul_check_interval=env.number(
                "JOBPROGRESS_CONSUL_CHECK_INTERVAL", 10.0, minimum=0.5, maximum=3600.0
            ),
            consul_deregister_after=env.duration("JOBPROGRESS_CONSUL_DEREGISTER_AFTER", "1m"),
            consul_retry_seconds=env.number(
                "JOBPROGRESS_CONSUL_RETRY_SECONDS", 5.0, minimum=0.1, maximum=600.0
            ),
            redis_timeout=env.number("JOBPROGRESS_REDIS_TIMEOUT", 5.0, minimum=0.1, maximum=300.0),
            redis_pool_size=env.integer("JOBPROGRESS_REDIS_POOL_SIZE", 16, minimum=1, maximum=1000),
            redis_wait_replicas=env.integer("JOBPROGRESS_REDIS_WAIT_REPLICAS", 0, minimum=0, maximum=10),
            redis_wait_ms=env.integer("JOBPROGRESS_REDIS_WAIT_MS", 100, minimum=1, maximum=5000),
            event_stream_maxlen=env.integer(
                "JOBPROGRESS_EVENT_STREAM_MAXLEN", 10_000, minimum=100, maximum=10_000_000
            ),
            retention_seconds=env.integer(
                "JOBPROGRESS_RETENTION_SECONDS", 86_400, minimum=60, maximum=365 * 86_400
            ),
            history_limit=env.integer("JOBPROGRESS_HISTORY_LIMIT", 1000, minimum=10, maximum=100_000),
        )


def _advertisable(host: str) -> str:
    """The address others reach us at: the listen host, or for a wildcard listen address
    (``0.0.0.0`` in a container) the address this machine's hostname resolves to."""
    if host not in WILDCARD_HOSTS:
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _key_prefix(env: Environ) -> str:
    prefix = env.text("JOBPROGRESS_KEY_PREFIX", "jobprogress:")
    if any(char in prefix for char in "{}\r\n ") or len(prefix) > 64:
        raise ConfigError(
            f"JOBPROGRESS_KEY_PREFIX={prefix!r} must be at most 64 characters without braces or spaces"
        )
    return prefix


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
