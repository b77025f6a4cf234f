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
from .backoff import Backoff
from .health import Health
from .settings import Settings
from .tasks import cancel_and_wait
from .web import HEALTH, LISTENING_HOOKS, SETTINGS, STOP_HOOKS

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


class ConsulUnavailable(ConsulException):  # type: ignore[misc]  # py-consul is untyped
    """Consul has not answered a lookup yet."""


def next_index_of(previous: str | int | None, answered: int) -> int | None:
    """The index for the next blocking query: ``None`` (start over) when the answer's index
    went back (a new agent), at least 1 (an index of 0 would make every query return at once)."""
    if previous is not None and answered < int(previous):
        return None
    return max(answered, 1)


def passing_instances(nodes: list[dict[str, Any]]) -> list[Instance]:
    """Instances from a ``/v1/health/service`` answer (the service's address, else its node's)."""
    return [
        Instance(
            node["Service"]["ID"],
            node["Service"]["Address"] or node["Node"]["Address"],
            int(node["Service"]["Port"]),
        )
        for node in nodes
    ]


class ServiceLookup:
    """Passing instances of a service, kept current by a blocking query and rotated so calls
    spread over them.

    A background task holds one long-poll on ``/v1/health/service/<name>?passing`` at a time:
    Consul answers as soon as the set of passing instances changes (or after ``wait``), so a
    lookup costs no request and still learns of a failing instance within a check interval.
    While Consul is unreachable the last answer is kept (the instances most likely still
    run, and a caller skips the ones that do not answer); it is retried with a backoff.

    An instance a caller found unreachable (:meth:`suspect`) goes to the back of the rotation
    for ``suspect_seconds``, until Consul's own check sees it.
    """

    def __init__(
        self,
        settings: Settings,
        service: str,
        *,
        wait_seconds: float = 55.0,
        first_answer_timeout: float = 5.0,
        suspect_seconds: float = 15.0,
    ) -> None:
        self.settings = settings
        self.service = service
        self.wait_seconds = wait_seconds
        self.first_answer_timeout = first_answer_timeout
        self.suspect_seconds = suspect_seconds
        self._instances: list[Instance] = []
        self._answered = asyncio.Event()
        #: Set (and replaced) on every answer from Consul.
        self._next_answer = asyncio.Event()
        self._error: Exception | None = None
        self._index: int | None = None
        self._suspects: dict[str, float] = {}
        self._counter = itertools.count()
        self._client: consul.aio.Consul | None = None
        self._task: asyncio.Task[None] | None = None
        #: Answers received from Consul (the first, then one per change or per ``wait``).
        self.answers = 0

    def start(self) -> None:
        # Its own client: a long-poll needs a timeout above the wait (Consul adds up to 1/16).
        self._client = create_consul(self.settings, timeout=self.wait_seconds * 1.1 + 10)
        self._task = asyncio.create_task(self._watch(), name=f"consul-watch-{self.service}")

    async def stop(self) -> None:
        try:
            if self._task is not None:
                await cancel_and_wait(self._task)
                self._task = None
        finally:
            if self._client is not None:
                await self._client.http.close()
                self._client = None

    async def _watch(self) -> None:
        assert self._client is not None
        backoff = Backoff(first=0.5, cap=10.0)
        failing = False
        while True:
            try:
                index, nodes = await self._client.health.service(
                    self.service, passing=True, index=self._index, wait=f"{self.wait_seconds:g}s"
                )
                instances = passing_instances(nodes)
                next_index = int(index)
            except Exception as exc:  # Consul away, or an answer we cannot read: retry
                self._error = exc
                self._answered.set()  # a first lookup waiting for an answer gets this one
                if not failing:
                    logger.warning(
                        "consul lookup of %s failed (%s); keeping the last %d instances, retrying",
                        self.service,
                        exc,
                        len(self._instances),
                        exc_info=not isinstance(exc, CONSUL_ERRORS),
                    )
                    failing = True
                self._index = None  # the agent may have restarted: its indexes start again
                await backoff.sleep()
                continue
            if failing:
                logger.info("consul lookup of %s works again", self.service)
            failing = False
            backoff.reset()
            self._instances = instances
            self._error = None
            self.answers += 1
            self._answered.set()
            self._next_answer.set()
            self._next_answer = asyncio.Event()
            self._index = next_index_of(self._index, next_index)

    async def instances(self) -> list[Instance]:
        """The passing instances Consul last named. Waits for the first answer (at most
        ``first_answer_timeout``); raises the lookup's error when there has never been one."""
        if self._task is None:
            raise RuntimeError("ServiceLookup.start() was not called")
        if not self._answered.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.first_answer_timeout):
                    await self._answered.wait()
        if not self._answered.is_set():
            raise TimeoutError(f"no answer from consul about {self.service} yet")
        if self._error is not None and self.answers == 0:
            # A new exception each time: re-raising the stored one would grow its traceback.
            raise ConsulUnavailable(f"consul lookup of {self.service} failed: {self._error}") from self._error
        return self._instances

    async def rotation(self, wait: float = 0.0) -> list[Instance]:
        """Every passing instance once, starting from the next one in turn; suspects last.

        With none passing, waits up to ``wait`` seconds for Consul to name one: an instance
        that has just started is registered a moment after it answers its first request."""
        instances = await self.instances()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not instances and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self._next_answer.wait()
            instances = self._instances
        if not instances:
            return []
        start = next(self._counter) % len(instances)
        turn = instances[start:] + instances[:start]
        now = asyncio.get_running_loop().time()
        self._suspects = {key: until for key, until in self._suspects.items() if until > now}
        return sorted(turn, key=lambda instance: instance.service_id in self._suspects)

    def suspect(self, instance: Instance) -> None:
        """``instance`` did not answer: offer it last for a while."""
        self._suspects[instance.service_id] = asyncio.get_running_loop().time() + self.suspect_seconds
