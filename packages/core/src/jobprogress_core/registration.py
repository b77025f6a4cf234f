"""Registration of this instance in Consul (lookups of other instances: :mod:`.discovery`).

A service starts and serves even when Consul is down: registration is retried in the
background, re-done when the agent forgets it, and undone on a graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import consul.aio
from aiohttp import web
from consul.exceptions import ACLPermissionDenied

from . import __version__
from .consul_client import CONSUL_ERRORS, Instance, create_consul
from .health import Health
from .settings import Settings
from .tasks import cancel_and_wait
from .web import HEALTH, LISTENING_HOOKS, SETTINGS, STOP_HOOKS

__all__ = ["CONSUL", "LIVENESS", "REGISTRATION", "Liveness", "Registration", "consul_ctx"]

logger = logging.getLogger(__name__)


#: An instance's own liveness, for a TTL check beside the one on ``/health``: whether its
#: inner loop turns, and a note saying how it is. Fed while it answers ``True``; left to
#: expire (critical) when it does not, or when the whole event loop is stuck.
Liveness = Callable[[], tuple[bool, str]]


class Registration:
    """This instance in Consul's catalog: unique ID, HTTP check on ``/health``,
    ``DeregisterCriticalServiceAfter``, version in the meta; with ``liveness``, also a TTL
    check fed by it.

    Consul hears the truth at once, not a check interval later: the instance registers once
    it listens, with the status its own ``/health`` gives at that moment, and when
    ``/health`` has answered critical the instance probes itself until it passes again and
    then passes its check in Consul (a new check ID, so an answer still on its way for the
    old check cannot undo that). Failures are left to Consul's own check, every interval.
    """

    #: Seconds between self-probes while ``/health`` is critical.
    RECOVERY_PROBE_SECONDS = 0.25

    def __init__(
        self,
        settings: Settings,
        client: consul.aio.Consul,
        health: Health,
        liveness: Liveness | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.health = health
        self.liveness = liveness
        #: The TTL check's period: three of the feeding loop's turns.
        self.ttl = 3 * settings.consul_retry_seconds
        host = socket.gethostname().split(".")[0]
        self.service_id = f"{settings.service}-{host}-{settings.port}-{uuid.uuid4().hex[:8]}"
        #: Bumped each time the HTTP check is replaced by a passing one.
        self.generation = 1
        self.registered = False
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def http_check_id(self) -> str:
        return f"{self.service_id}:http:{self.generation}"

    def check(self, status: str) -> dict[str, Any]:
        """The HTTP check on ``/health``, starting as ``status``."""
        settings = self.settings
        return {
            "CheckID": self.http_check_id,
            "Name": f"{settings.service} /health",
            "HTTP": f"{Instance(self.service_id, settings.advertise_addr, settings.port).url}/health",
            "Interval": f"{settings.consul_check_interval:g}s",
            "Timeout": "3s",
            "DeregisterCriticalServiceAfter": settings.consul_deregister_after,
            "Status": status,
        }

    @property
    def ttl_check_id(self) -> str:
        return f"{self.service_id}:loop"

    def ttl_check(self) -> dict[str, Any]:
        """Critical until fed, right after registering: a status change, so Consul's catalog
        takes the note with it at once (a note alone waits for the agent's next sync)."""
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
        """Register, the HTTP check starting as what this instance says of itself now."""
        settings = self.settings
        status = (await self.health.evaluate()).status
        await self.client.agent.service.register(
            settings.service,
            service_id=self.service_id,
            address=settings.advertise_addr,
            port=settings.port,
            tags=["jobprogress", f"v{__version__}"],
            meta={"version": __version__, "env": settings.env},
            check=self.check(status),
            extra_checks=[self.ttl_check()] if self.liveness else [],
            replace_existing_checks=True,
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

    async def follow_recovery(self) -> None:
        """Each time ``/health`` was critical: probe until it passes, then say so to Consul."""
        while True:
            await self.health.failed.wait()
            self.health.failed.clear()
            while not (await self.health.evaluate()).healthy:  # noqa: ASYNC110  # a probe, not a flag
                await asyncio.sleep(self.RECOVERY_PROBE_SECONDS)
            if not self.registered:
                continue  # the next registration starts with the status of that moment
            try:
                await self.pass_http_check()
            except CONSUL_ERRORS as exc:
                self.registered = False  # registering again sets the status right
                logger.warning("could not tell consul that %s passes again: %s", self.service_id, exc)

    async def pass_http_check(self) -> None:
        """Replace a failing HTTP check by a passing one (Consul's next run checks it again)."""
        current = (await self.client.agent.checks()).get(self.http_check_id)
        if current is None or current["Status"] == "passing":
            return
        old = self.http_check_id
        self.generation += 1
        definition = self.check("passing")
        definition["ID"] = definition.pop("CheckID")
        name = definition.pop("Name")
        await self.client.agent.check.register(name, check=definition, service_id=self.service_id)
        await self.client.agent.check.deregister(old)
        logger.info("%s passes again: told consul", self.service_id)

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.keep_registered(), name="consul-registration"),
            asyncio.create_task(self.follow_recovery(), name="consul-recovery"),
        ]

    async def stop(self) -> None:
        """Stop keeping the registration alive, then deregister (also if the last attempt
        to register seemed to fail: it may have reached the agent). Idempotent."""
        if not self.tasks:
            return
        tasks, self.tasks = self.tasks, []
        await cancel_and_wait(*tasks)
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
    """Cleanup context: register this instance once it listens; deregister first on a stop."""
    client = create_consul(app[SETTINGS])
    registration = Registration(app[SETTINGS], client, app[HEALTH], app.get(LIVENESS))
    app[CONSUL] = client
    app[REGISTRATION] = registration
    app[STOP_HOOKS].insert(0, registration.stop)
    app[LISTENING_HOOKS].append(registration.start)
    yield
    await registration.stop()
    await client.http.close()
