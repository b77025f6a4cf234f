"""Registration of this instance in Consul, and lookups of healthy instances.

A service starts and serves even when Consul is down: registration is retried in the
background, re-done when the agent forgets it, and undone on a graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import consul.aio
from aiohttp import web
from consul.exceptions import ACLPermissionDenied, ConsulException

from . import __version__
from .settings import Settings
from .web import SETTINGS, STOP_HOOKS

logger = logging.getLogger(__name__)

CONSUL_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ConsulException)


def create_consul(settings: Settings, *, timeout: float = 10.0) -> consul.aio.Consul:
    """An asyncio Consul client; must be called inside a running event loop."""
    with warnings.catch_warnings():
        # py-consul 1.8 passes aiohttp's deprecated ``ssl_context`` argument.
        warnings.filterwarnings("ignore", message=".*ssl_context.*", category=DeprecationWarning)
        return consul.aio.Consul(
            host=settings.consul_host,
            port=settings.consul_port,
            scheme=settings.consul_scheme,
            token=str(settings.consul_token) if settings.consul_token else None,
            connections_timeout=timeout,
        )


@dataclass(frozen=True)
class Instance:
    service_id: str
    address: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


#: An instance's own liveness, for a TTL check beside the one on ``/health``: whether its
#: inner loop turns, and a note saying how it is. Fed while it answers ``True``; left to
#: expire (critical) when it does not, or when the whole event loop is stuck.
Liveness = Callable[[], tuple[bool, str]]


class Registration:
    """This instance in Consul's catalog: unique ID, HTTP check on ``/health``,
    ``DeregisterCriticalServiceAfter``, version in the meta; with ``liveness``, also a TTL
    check fed by it."""

    def __init__(
        self, settings: Settings, client: consul.aio.Consul, liveness: Liveness | None = None
    ) -> None:
        self.settings = settings
        self.client = client
        self.liveness = liveness
        #: The TTL check's period: three of the feeding loop's turns.
        self.ttl = 3 * settings.consul_retry_seconds
        host = socket.gethostname().split(".")[0]
        self.service_id = f"{settings.service}-{host}-{settings.port}-{uuid.uuid4().hex[:8]}"
        self.registered = False
        self.task: asyncio.Task[None] | None = None

    def check(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "CheckID": f"{self.service_id}:http",
            "Name": f"{settings.service} /health",
            "HTTP": f"{Instance(self.service_id, settings.advertise_addr, settings.port).url}/health",
            "Interval": f"{settings.consul_check_interval:g}s",
            "Timeout": "3s",
            "DeregisterCriticalServiceAfter": settings.consul_deregister_after,
        }

    @property
    def ttl_check_id(self) -> str:
        return f"{self.service_id}:loop"

    def ttl_check(self) -> dict[str, Any]:
        return {
            "CheckID": self.ttl_check_id,
            "Name": f"{self.settings.service} job loop",
            "TTL": f"{self.ttl:g}s",
            "DeregisterCriticalServiceAfter": self.settings.consul_deregister_after,
        }

    async def feed(self) -> None:
        """Pass the TTL check if the instance says it is live; fail it, with its note, if not."""
        if self.liveness is None:
            return
        live, notes = self.liveness()
        if live:
            await self.client.agent.check.ttl_pass(self.ttl_check_id, notes)
        else:
            await self.client.agent.check.ttl_fail(self.ttl_check_id, notes)

    async def register(self) -> None:
        settings = self.settings
        await self.client.agent.service.register(
            settings.service,
            service_id=self.service_id,
            address=settings.advertise_addr,
            port=settings.port,
            tags=["jobprogress", f"v{__version__}"],
            meta={"version": __version__, "env": settings.env},
            check=self.check(),
            extra_checks=[self.ttl_check()] if self.liveness else [],
        )
        self.registered = True

    async def is_known(self) -> bool:
        services = await self.client.agent.services()
        return self.service_id in services

    async def keep_registered(self) -> None:
        """Register, then make sure the agent still knows us; retry forever while Consul is away."""
        interval = self.settings.consul_retry_seconds
        down_since_logged = False
        while True:
            try:
                if not self.registered or not await self.is_known():
                    await self.register()
                    logger.info(
                        "registered %s in consul at %s:%s",
                        self.service_id,
                        self.settings.consul_host,
                        self.settings.consul_port,
                    )
                await self.feed()
                down_since_logged = False
            except CONSUL_ERRORS as exc:
                self.registered = False
                if not down_since_logged:
                    why = "consul unavailable"
                    if isinstance(exc, ACLPermissionDenied):
                        why = "consul refused the registration (check CONSUL_HTTP_TOKEN and its policy)"
                    logger.warning("%s: %s; serving anyway and retrying every %gs", why, exc, interval)
                    down_since_logged = True
            await asyncio.sleep(interval)

    def start(self) -> None:
        self.task = asyncio.create_task(self.keep_registered(), name="consul-registration")

    async def stop(self) -> None:
        """Stop keeping the registration alive, then deregister (also if the last attempt
        to register seemed to fail: it may have reached the agent). Idempotent."""
        if self.task is None:
            return
        task, self.task = self.task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.registered = False
        try:
            await self.client.agent.service.deregister(self.service_id)
            logger.info("deregistered %s from consul", self.service_id)
        except CONSUL_ERRORS as exc:
            logger.warning("could not deregister %s from consul: %s", self.service_id, exc)


REGISTRATION = web.AppKey("consul_registration", Registration)
#: Set by a service before ``consul_ctx`` runs to get a TTL check fed by its loop (worker).
LIVENESS: web.AppKey[Liveness] = web.AppKey("liveness")
CONSUL = web.AppKey("consul", consul.aio.Consul)


async def consul_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: keep this instance registered; deregister first on a stop."""
    client = create_consul(app[SETTINGS])
    registration = Registration(app[SETTINGS], client, app.get(LIVENESS))
    app[CONSUL] = client
    app[REGISTRATION] = registration
    app[STOP_HOOKS].insert(0, registration.stop)
    registration.start()
    yield
    await registration.stop()
    await client.http.close()


class ServiceLookup:
    """Passing instances of a service, rotated so calls spread over them."""

    def __init__(self, client: consul.aio.Consul, service: str, *, cache_seconds: float = 2.0) -> None:
        self.client = client
        self.service = service
        self.cache_seconds = cache_seconds
        self._instances: list[Instance] = []
        self._fetched_at = -float("inf")
        self._counter = itertools.count()

    async def instances(self) -> list[Instance]:
        loop = asyncio.get_running_loop()
        if loop.time() - self._fetched_at > self.cache_seconds:
            _, nodes = await self.client.health.service(self.service, passing=True)
            self._instances = [
                Instance(
                    node["Service"]["ID"],
                    node["Service"]["Address"] or node["Node"]["Address"],
                    int(node["Service"]["Port"]),
                )
                for node in nodes
            ]
            # An empty answer is not kept: the first instance to pass is used at once.
            self._fetched_at = loop.time() if self._instances else -float("inf")
        return self._instances

    async def rotation(self) -> list[Instance]:
        """Every passing instance once, starting from the next one in turn."""
        instances = await self.instances()
        if not instances:
            return []
        start = next(self._counter) % len(instances)
        return instances[start:] + instances[:start]

    def forget(self) -> None:
        """Drop the cache, e.g. after an instance failed to answer."""
        self._fetched_at = -float("inf")
