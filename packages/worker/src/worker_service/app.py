"""worker-service application factory: health and metrics over HTTP, the consumer loop inside."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from jobprogress_core.consul import consul_ctx
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.web import HEALTH_CHECKS, KEYS, SETTINGS, STORE, create_base_app

from .consumer import Consumer, Limits
from .context import HandlerRegistry
from .simulated import builtin_handlers

SERVICE = "worker-service"
HANDLERS = web.AppKey("handlers", HandlerRegistry)
CONSUMER = web.AppKey("consumer", Consumer)


def create_app(settings: Settings, handlers: HandlerRegistry | None = None) -> web.Application:
    app = create_base_app(settings)
    app[HANDLERS] = handlers or builtin_handlers()
    app.cleanup_ctx.append(consumer_ctx)
    app.cleanup_ctx.append(consul_ctx)
    return app


async def consumer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # The blocking XREADGROUP holds its connection for the whole wait: it gets its own.
    reader = create_redis(settings, block_ms=settings.worker_block_ms, max_connections=1)
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

    app[HEALTH_CHECKS]["consumer"] = consumer_running
    consumer.start()
    yield
    await consumer.stop()
