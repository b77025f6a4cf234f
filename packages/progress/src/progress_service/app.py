"""progress-service application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web
from aiohttp_security import remember

from jobprogress_core.errors import Handler, TooManyRequests
from jobprogress_core.limits import identity_limit_ctx, mint_identity, stream_leases_ctx
from jobprogress_core.redis import REDIS_ERRORS, close, create_redis
from jobprogress_core.redis_urls import is_cluster_url
from jobprogress_core.registration import consul_ctx
from jobprogress_core.security import identity_of
from jobprogress_core.settings import ConfigError, ProgressSettings
from jobprogress_core.web import KEYS, PROGRESS_SETTINGS, STOP_HOOKS, STORE, collector_ctx, create_base_app

from .admission import ADMISSION, Admission
from .cors import Cors
from .forward import forward_ctx, forward_job_call
from .hub import Hub
from .multi_stream import jobs_stream, mine_stream
from .stream import HUB, progress_stream

logger = logging.getLogger(__name__)

SERVICE: Final = "progress-service"


def find_web_dir(configured: str | None) -> Path:
    """``JOBPROGRESS_WEB_DIR``, else the repository's ``web/`` next to this package."""
    if configured:
        path = Path(configured)
        if not (path / "index.html").is_file():
            raise ConfigError(f"JOBPROGRESS_WEB_DIR={configured!r} has no index.html")
        return path
    for parent in Path(__file__).resolve().parents:
        if (parent / "web" / "index.html").is_file():
            return parent / "web"
    raise ConfigError("JOBPROGRESS_WEB_DIR is not set and no web/index.html was found")


def create_app(settings: ProgressSettings, web_dir: Path | None = None) -> web.Application:
    app = create_base_app(settings, image_origins=settings.image_origins)
    app.middlewares.append(page_identity_middleware)
    Cors(settings.cors_origins).install(app)
    app[ADMISSION] = Admission(
        settings.sse_setups_per_second, (settings.sse_retry_ms, settings.sse_retry_max_ms)
    )
    web_dir = web_dir or find_web_dir(settings.web_dir)
    app.router.add_get("/api/progress", jobs_stream, name="jobs_stream")
    app.router.add_get("/api/progress/mine", mine_stream, name="mine_stream")
    app.router.add_get("/api/progress/{job_id}", progress_stream, name="progress_stream")
    app.router.add_route("*", "/api/jobs", forward_job_call, name="jobs_forward")
    app.router.add_route("*", "/api/jobs/{tail:.*}", forward_job_call, name="job_forward")
    app.router.add_route("*", "/api/tokens", forward_job_call, name="tokens_forward")
    app.router.add_route("*", "/api/push/{tail:.*}", forward_job_call, name="push_forward")
    app.router.add_get("/api/openapi.json", forward_job_call, name="openapi_forward")
    app.router.add_get("/", redirect_to_page)
    app.router.add_get("/client", redirect_to_page)
    app.router.add_get("/client/", redirect_to_page)
    app.router.add_static("/client", web_dir, name="client")
    app.cleanup_ctx.append(identity_limit_ctx)
    app.cleanup_ctx.append(stream_leases_ctx)
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(consul_ctx)
    app.cleanup_ctx.append(forward_ctx)
    app.cleanup_ctx.append(collector_ctx)
    return app


@web.middleware
def page_identity_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """The page hands each browser its identity cookie, and renews it on every load (so it
    lasts ``JOBPROGRESS_IDENTITY_COOKIE_DAYS`` after the last visit). Any other request goes
    on as the handler's own awaitable: no frame of this middleware stays for a stream."""
    if request.method == "GET" and request.path.endswith(".html"):
        return _with_identity(request, handler)
    return handler(request)


async def _with_identity(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if response.status == 200 and hdrs.AUTHORIZATION not in request.headers:
        identity = await identity_of(request)
        if identity is None:
            try:
                identity = await mint_identity(request)
            except (TooManyRequests, *REDIS_ERRORS) as exc:
                # The page still loads; its calls will say that it has no identity.
                logger.warning("no new identity for %s: %s", request.remote, exc)
                return response
        await remember(request, response, identity)
    return response


async def redirect_to_page(request: web.Request) -> web.Response:
    location = "/client/index.html"
    if request.query_string:
        location += f"?{request.query_string}"
    raise web.HTTPFound(location)


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[PROGRESS_SETTINGS]
    # Each partition's reader holds a connection for its blocking XREAD: they get a client of
    # their own, with room for one reader per partition (on a cluster, per node) and no more.
    # On a cluster, they and the streams' reads of the log go to replicas: a client is sent
    # only what replication has carried, which a failover cannot take back (see replay.py).
    reader = create_redis(
        settings,
        block_ms=settings.reader_block_ms,
        max_connections=settings.partitions,
        role="hub-reader",
        replicas=True,
    )
    cluster = is_cluster_url(settings.redis_url)
    replicas = create_redis(settings, role="log", replicas=True) if cluster else None
    hub = Hub(
        app[STORE],
        reader,
        app[KEYS],
        block_ms=settings.reader_block_ms,
        queue_size=settings.sse_queue_size,
        buffer_bytes=settings.sse_buffer_bytes,
        replicas=replicas,
    )
    app[HUB] = hub

    async def close_streams() -> None:
        logger.info("closing %d streams", hub.subscriber_count)
        hub.close_all()

    app[STOP_HOOKS].append(close_streams)
    yield
    await hub.stop()
    if replicas is not None:
        await close(replicas)
