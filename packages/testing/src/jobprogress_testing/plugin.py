"""pytest plugin: the real stack as fixtures.

``jobprogress_stack`` (session scope) starts a private ``redis-server`` and
``consul agent -dev`` on free ports and one instance of each service as a separate
process, and stops them all at the end. Start more instances with
``jobprogress_stack.start_service(name, **env)``. When a test that used the stack fails,
the tail of every process log is added to its report.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, TypeVar, overload

import aiohttp
import pytest

from .keys import Keys
from .redis import create_redis
from .security import Audience, Tokens, new_identity
from .settings import Settings
from .stack import SERVICE_MODULES, ConsulAgent, RedisServer, Stack
from .store import JobStore

#: Settings that make the stack quick to react in tests (see the README's table).
TEST_ENV = {
    "JOBPROGRESS_ENV": "development",
    "JOBPROGRESS_SECRET_KEY": "test-secret-key-not-for-production-use",
    "JOBPROGRESS_CONSUL_CHECK_INTERVAL": "1",
    "JOBPROGRESS_CONSUL_RETRY_SECONDS": "1",
    "JOBPROGRESS_WORKER_BLOCK_MS": "1000",
    "JOBPROGRESS_READER_BLOCK_MS": "2000",
    "JOBPROGRESS_SHUTDOWN_TIMEOUT": "5",
    "JOBPROGRESS_LOG_LEVEL": "INFO",
    # Tests run many clients from one address and identity; the limits' own tests start
    # instances with low ones.
    "JOBPROGRESS_SUBMISSIONS_PER_MINUTE": "100000",
    "JOBPROGRESS_NEW_IDENTITIES_PER_MINUTE": "100000",
    "JOBPROGRESS_STREAMS_PER_IDENTITY": "100000",
}

_STACKS: list[Stack] = []

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, *, timeout: float = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(
    check: Callable[[], T | None], what: str, *, timeout: float = ..., interval: float = ...
) -> T: ...
async def eventually(
    check: Callable[[], Any], what: str, *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Wait for ``check()`` (a function or a coroutine function) to return something true,
    and return it; fail naming ``what`` and the last value after ``timeout`` seconds. A check
    that raises fails at once: what it raised is the test's failure.

    Whatever another process writes (a log line, a metric, a key) shows up some time after
    the event a test saw last: read it through this, never right after that event."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last: {result!r})")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def jobprogress_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private ``redis-server`` on a free port (never the machine's own Redis)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jobprogress_consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """A private ``consul agent -dev`` on free ports."""
    agent = ConsulAgent(tmp_path_factory.mktemp("consul"))
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def jobprogress_stack(
    tmp_path_factory: pytest.TempPathFactory, jobprogress_redis: RedisServer, jobprogress_consul: ConsulAgent
) -> Iterator[Stack]:
    """Redis, Consul and one instance of each service, as separate processes."""
    stack = Stack(
        tmp_path_factory.mktemp("stack"),
        redis_url=jobprogress_redis.url,
        consul_addr=jobprogress_consul.address,
        env=dict(TEST_ENV),
    )
    stack.redis, stack.consul = jobprogress_redis, jobprogress_consul
    _STACKS.append(stack)
    try:
        for service in SERVICE_MODULES:
            stack.start_service(service)
        stack.wait_passing()
        yield stack
    finally:
        _STACKS.remove(stack)
        stack.stop_services()


@pytest.fixture
def jobprogress_make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """Build isolated stacks: a Redis and a Consul of their own, and the services named.

    ``make(services=("job-queue-service", "worker-service", "progress-service"),
    persistent_redis=False, **env)`` starts them and returns the :class:`Stack`; every stack
    made is stopped at the end of the test.
    """
    stacks: list[Stack] = []

    def make(
        services: tuple[str, ...] = tuple(SERVICE_MODULES), *, persistent_redis: bool = False, **env: str
    ) -> Stack:
        stack = Stack(
            tmp_path_factory.mktemp("stack"), persistent_redis=persistent_redis, env={**TEST_ENV, **env}
        )
        stacks.append(stack)
        _STACKS.append(stack)
        stack.start_backends()
        for service in services:
            stack.start_service(service)
        stack.wait_passing()
        return stack

    yield make
    for stack in stacks:
        _STACKS.remove(stack)
        stack.stop()


@pytest.fixture
def jobprogress_settings(jobprogress_redis: RedisServer) -> Callable[..., Settings]:
    """Build a service's settings for in-process tests: the private Redis, a unique key prefix."""
    prefix = f"test{uuid.uuid4().hex[:8]}:"

    def build(service: str = "job-queue-service", **env: str) -> Settings:
        environ = {**TEST_ENV, "REDIS_URL": jobprogress_redis.url, "JOBPROGRESS_KEY_PREFIX": prefix, **env}
        return Settings.from_env(service, environ)

    return build


@pytest.fixture
async def jobprogress_store(jobprogress_settings: Callable[..., Settings]) -> AsyncIterator[JobStore]:
    """A :class:`JobStore` on the private Redis, under a key prefix of its own."""
    settings = jobprogress_settings()
    redis = create_redis(settings)
    yield JobStore(redis, Keys(settings.key_prefix), stream_maxlen=settings.event_stream_maxlen)
    await redis.aclose()


def bearer_headers(identity: str | None = None) -> dict[str, str]:
    """``Authorization`` for ``identity`` (a new one by default), signed with the stack's
    secret, as ``POST /api/tokens`` would issue it."""
    token, _ = Tokens(TEST_ENV["JOBPROGRESS_SECRET_KEY"]).issue(
        Audience.API, identity or new_identity(), ttl=3600
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def jobprogress_identity() -> str:
    """The identity the ``http`` client acts as (a new one per test)."""
    return new_identity()


@pytest.fixture
async def http(jobprogress_identity: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client without a total timeout (SSE streams are long; tests set their own)
    and without a cap on open connections. It acts as one identity of its own (a bearer
    token on every request): ``jobprogress_identity``. Another identity is
    ``headers=bearer_headers()``."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    connector = aiohttp.TCPConnector(limit=0)  # SSE streams hold their connections: no cap
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, headers=bearer_headers(jobprogress_identity)
    ) as session:
        yield session


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    used = {"jobprogress_stack", "jobprogress_make_stack"} & set(getattr(item, "fixturenames", ()))
    if report.failed and used:
        for stack in _STACKS:
            report.sections.append(("jobprogress stack logs", stack.logs()))
