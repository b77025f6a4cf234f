"""Lookups of other services' healthy instances in Consul: kept current by a blocking
query, rotated so calls spread over them, the last answer kept while Consul is away."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import consul.aio
from consul.exceptions import ConsulException

from jobprogress_client.backoff import Backoff

from .consul_client import CONSUL_ERRORS, Instance, create_consul
from .settings import Settings
from .tasks import cancel_and_wait

__all__ = ["ConsulUnavailable", "ServiceLookup", "next_index_of", "passing_instances"]

logger = logging.getLogger(__name__)


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
