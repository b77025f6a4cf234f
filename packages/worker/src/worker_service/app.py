"""worker-service application factory: health and metrics over HTTP, the consumer loop inside."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from jobprogress_core.redis import create_redis
from jobprogress_core.registration import LIVENESS, consul_ctx
from jobprogress_core.settings import ConfigError, WorkerSettings
from jobprogress_core.web import HEALTH, KEYS, STORE, WORKER_SETTINGS, create_base_app

from .consumer import Consumer, Limits
from .context import HandlerRegistry
from .simulated import builtin_handlers

SERVICE: Final = "worker-service"
HANDLERS = web.AppKey("handlers", HandlerRegistry)
CONSUMER = web.AppKey("consumer", Consumer)


def create_app(settings: WorkerSettings, handlers: HandlerRegistry | None = None) -> web.Application:
    app = create_base_app(settings)
    app[HANDLERS] = handlers or load_handlers(settings.handlers)
    app.cleanup_ctx.append(consumer_ctx)
    app.cleanup_ctx.append(consul_ctx)
    return app


def load_handlers(path: str | None) -> HandlerRegistry:
    """The registry named by ``JOBPROGRESS_HANDLERS`` (``module:attribute``, a registry or a
    function returning one), else the built-in simulated jobs."""
    if path is None:
        return builtin_handlers()
    module_name, _, attribute = path.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"JOBPROGRESS_HANDLERS={path!r} cannot be loaded: {exc}") from None
    registry = target() if callable(target) and not isinstance(target, HandlerRegistry) else target
    if not isinstance(registry, HandlerRegistry):
        raise ConfigError(f"JOBPROGRESS_HANDLERS={path!r} is not a HandlerRegistry")
    return registry


async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[WORKER_SETTINGS]
    # A blocking XREADGROUP holds its connection for the whole wait: the reads get a client
    # of their own, with a connection for each queue shard (at most one read in flight each).
    reader = create_redis(
        settings, block_ms=settings.worker_block_ms, max_connections=settings.partitions, role="queue-reader"
    )
    consumer = Consumer(
        app[STORE],
        reader,
        app[KEYS],
        app[HANDLERS],
        concurrency=settings.worker_concurrency,
        block_ms=settings.worker_block_ms,
        limits=Limits(
            visibility_timeout=settings.visibility_timeout,
            max_attempts=settings.max_attempts,
            time_limit=settings.job_time_limit,
            grace_seconds=settings.grace_seconds,
            outage_grace=settings.redis_outage_grace,
        ),
    )
    app[CONSUMER] = consumer

    async def consumer_running() -> bool:
        return consumer.alive

    app[HEALTH].add("consumer", consumer_running)
    app[LIVENESS] = consumer.liveness  # Consul's TTL check on the job loop
    consumer.start()
    yield
    await consumer.stop()
