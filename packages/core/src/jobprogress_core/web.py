"""What every service's web application shares: typed app keys, the base app with its
middlewares, the Redis resource (with the job store and queue on it), ``/health`` and
``/metrics``."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError

from .browsers import same_origin_middleware, security_headers, security_headers_hook
from .errors import Handler, error_middleware
from .health import Health
from .keys import Keys
from .logs import REQUEST_ID
from .metrics import HTTP_LATENCY, HTTP_REQUESTS, setup_metrics
from .queue import JobQueue
from .redis import REDIS_ERRORS, close, create_redis
from .replication import Replication
from .security import setup_security
from .settings import ClientFacingSettings, JobQueueSettings, ProgressSettings, Settings, WorkerSettings
from .store import JobStore

logger = logging.getLogger(__name__)

StopHook = Callable[[], Awaitable[None]]

SETTINGS = web.AppKey("settings", Settings)
#: The same settings again, as their own class: an app holds the keys its settings' class
#: fills (see :func:`create_base_app`), so code of another service finds no such key.
CLIENT_FACING_SETTINGS = web.AppKey("client_facing_settings", ClientFacingSettings)
JOB_QUEUE_SETTINGS = web.AppKey("job_queue_settings", JobQueueSettings)
WORKER_SETTINGS = web.AppKey("worker_settings", WorkerSettings)
PROGRESS_SETTINGS = web.AppKey("progress_settings", ProgressSettings)
KEYS = web.AppKey("keys", Keys)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", JobStore)
QUEUE = web.AppKey("queue", JobQueue)
#: Run, in order, once the server listens (registering in Consul waits for that).
LISTENING_HOOKS = web.AppKey("listening_hooks", list[Callable[[], None]])
#: Run, in order, when a stop is asked for and before the server stops listening.
STOP_HOOKS = web.AppKey("stop_hooks", list[StopHook])
#: What ``/health`` checks: Redis, then whatever a service adds (``app[HEALTH].add``).
HEALTH = web.AppKey("health", Health)

#: An ``X-Request-Id`` a caller (or a proxy in front) may give; anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)


@web.middleware
def request_id_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Give the request an id (the caller's ``X-Request-Id`` when it is sane, else a new
    one) that its log lines carry and that its response and forwarded calls repeat.

    A plain function returning the handler's awaitable, as the other middlewares that have
    nothing to do after the handler are: none of them keeps a frame for as long as a
    stream lasts (thousands at once)."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
    request[REQUEST_ID_KEY] = request_id
    REQUEST_ID.set(request_id)
    return handler(request)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


#: The status a request is counted with when its client left first (nginx's 499): a page
#: closed on its stream, most often, which is no server error.
CLIENT_CLOSED = 499

#: Methods counted under their own name; any other is ``OTHER``, so a client cannot make up
#: label values (a new time series each) on the routes that take every method.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


def http_metrics_middleware(service: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status = CLIENT_CLOSED  # the client left before the handler was done
            raise
        finally:
            route = _route_name(request)
            method = request.method if request.method in METHODS else "OTHER"
            requests, latency = _http_series(service, route, method, status)
            requests.inc()
            latency.observe(time.perf_counter() - started)

    return middleware


@functools.lru_cache(maxsize=4096)
def _http_series(service: str, route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter and latency histogram of one kind of request, looked up once:
    their labels are few (the routes, the methods of :data:`METHODS`, the statuses)."""
    requests = HTTP_REQUESTS.labels(service, route, method, str(status))
    return requests, HTTP_LATENCY.labels(service, route, method)


def create_base_app(
    settings: Settings, *, client_max_size: int = 64 * 1024, image_origins: tuple[str, ...] = ()
) -> web.Application:
    """The application every service starts from: settings, error and metrics middleware,
    identities and the same-origin rule (:mod:`.security`), the security headers (the page's
    images also from ``image_origins``), the Redis client as a cleanup context, ``/health``
    and ``/metrics``."""
    app = web.Application(
        middlewares=[
            request_id_middleware,
            http_metrics_middleware(settings.service),
            error_middleware,
            same_origin_middleware,
        ],
        client_max_size=client_max_size,
    )
    app[SETTINGS] = settings
    _hold_typed(app, settings)
    setup_security(app, settings)
    app.on_response_prepare.append(security_headers_hook(security_headers(image_origins)))
    app.on_response_prepare.append(add_request_id)
    app[KEYS] = Keys(settings.key_prefix, settings.partitions)
    app[LISTENING_HOOKS] = []
    app[STOP_HOOKS] = []
    app[HEALTH] = Health()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/health", health)
    setup_metrics(app, settings.service)
    return app


def _hold_typed(app: web.Application, settings: Settings) -> None:
    """The settings under the key of each class they are an instance of."""
    if isinstance(settings, ClientFacingSettings):
        app[CLIENT_FACING_SETTINGS] = settings
    if isinstance(settings, JobQueueSettings):
        app[JOB_QUEUE_SETTINGS] = settings
    if isinstance(settings, WorkerSettings):
        app[WORKER_SETTINGS] = settings
    if isinstance(settings, ProgressSettings):
        app[PROGRESS_SETTINGS] = settings


#: Allocations between two collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


async def collector_ctx(app: web.Application) -> AsyncIterator[None]:
    """Python's cycle collector, tuned for a service's many short-lived objects (each request
    makes hundreds) and many long-lived ones (each stream's); a service's last context, once
    all is set up.

    Every object alive at start (modules, classes: some 64,000) is frozen out of the
    collections, and the youngest generation is collected every 10,000 allocations rather
    than 700, so the older ones, which a full collection walks whole (every stream's
    objects), are collected some 15 times less often. In a storm of 5,000 connects the
    collector took 1.4 s of progress-service's 2.8 s of CPU with the defaults, 0.35 s so;
    submissions cost job-queue-service some 6% less CPU (``bench/README.md``)."""
    gc.collect()
    gc.freeze()
    defaults = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *defaults[1:])
    yield
    gc.set_threshold(*defaults)
    gc.unfreeze()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = create_redis(settings)
    app[REDIS] = redis
    app[STORE] = JobStore(
        redis,
        app[KEYS],
        stream_maxlen=settings.event_stream_maxlen,
        retention_seconds=settings.retention_seconds,
        history_limit=settings.history_limit,
        replication=Replication(settings.redis_wait_replicas, settings.redis_wait_ms),
    )
    # Enqueueing and counting; the worker's consumer has its own, with its reader and visibility.
    app[QUEUE] = JobQueue(redis, app[KEYS])
    app[HEALTH].add("redis", lambda: redis_ok(redis), fails_as="unavailable")
    logger.info("using redis at %s", settings.redis_url_masked)
    try:
        async with asyncio.timeout(settings.redis_timeout):
            await redis.ping()
    except AuthenticationError as exc:
        # Serving on: /health says 503 until the credentials work (an ACL can be fixed live).
        logger.error("redis at %s refused the credentials of REDIS_URL: %s", settings.redis_url_masked, exc)
    except (TimeoutError, *REDIS_ERRORS) as exc:
        logger.warning("redis at %s does not answer yet: %s", settings.redis_url_masked, exc)
    yield
    await close(redis)


async def redis_ok(redis: Redis, timeout: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return bool(await redis.ping())
    except (TimeoutError, *REDIS_ERRORS):
        return False


async def health(request: web.Request) -> web.Response:
    """200 when this instance and its dependencies work, 503 otherwise (Consul checks it)."""
    report = await request.app[HEALTH].evaluate()
    body = {"status": report.status, "service": request.app[SETTINGS].service, "checks": report.checks}
    if report.healthy:
        return web.json_response(body)
    return web.json_response(body, status=503, headers={"Retry-After": "5"})
