"""pytest plugin: the real stack as fixtures.

``jobprogress_stack`` (session scope) starts a private ``redis-server`` and
``consul agent -dev`` on free ports and one instance of each service as a separate
process, and stops them all at the end. Start more instances with
``jobprogress_stack.start_service(name, **env)``. ``jobprogress_redis_cluster`` (module
scope) is a local Redis Cluster of its own, three masters and three replicas;
``jobprogress_make_redis_cluster`` makes fresh ones for a test that breaks them. When a test
that used a stack or a cluster fails, the tail of every process log is added to its report.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import aiohttp
import pytest

from jobprogress_core.keys import Keys
from jobprogress_core.redis import create_redis
from jobprogress_core.security import new_identity
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore

from .backends import ConsulAgent, RedisServer
from .cluster import RedisCluster
from .environment import TEST_ENV, bearer_headers
from .stack import SERVICE_MODULES, Stack

_STACKS: list[Stack] = []
_CLUSTERS: list[RedisCluster] = []


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


@pytest.fixture(scope="module")
def jobprogress_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private Redis Cluster, three masters with a replica each, started (healthy) for the
    tests of one module: see :class:`RedisCluster`. A test that kills a node, fails over or
    moves a slot leaves it healthy, with every node running; one that cannot, makes its own
    (``jobprogress_make_redis_cluster``)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    _CLUSTERS.append(cluster)
    try:
        cluster.start()
        yield cluster
    finally:
        _CLUSTERS.remove(cluster)
        cluster.stop()


@pytest.fixture
def jobprogress_make_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisCluster]]:
    """Fresh clusters for one test: ``make(**options)`` (those of :class:`RedisCluster`)
    starts one and returns it; every cluster made is stopped at the end of the test, however
    it ends."""
    clusters: list[RedisCluster] = []

    def make(**options: Any) -> RedisCluster:
        cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), **options)
        clusters.append(cluster)
        _CLUSTERS.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        _CLUSTERS.remove(cluster)
        cluster.stop()


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


@pytest.fixture(params=["one Redis", "Redis Cluster"])
def jobprogress_any_settings(request: pytest.FixtureRequest) -> Settings:
    """job-queue-service's settings on each topology in turn (the test runs once on each):
    the private Redis, then the module's Redis Cluster; a unique key prefix on both."""
    if request.param == "one Redis":
        settings: Settings = request.getfixturevalue("jobprogress_settings")()
        return settings
    cluster: RedisCluster = request.getfixturevalue("jobprogress_redis_cluster")
    prefix = f"test{uuid.uuid4().hex[:8]}:"
    environ = {**TEST_ENV, "REDIS_URL": cluster.url, "JOBPROGRESS_KEY_PREFIX": prefix}
    return Settings.from_env("job-queue-service", environ)


@pytest.fixture
async def jobprogress_store(jobprogress_settings: Callable[..., Settings]) -> AsyncIterator[JobStore]:
    """A :class:`JobStore` on the private Redis, under a key prefix of its own."""
    settings = jobprogress_settings()
    redis = create_redis(settings)
    yield JobStore(
        redis, Keys(settings.key_prefix, settings.partitions), stream_maxlen=settings.event_stream_maxlen
    )
    await redis.aclose()


@pytest.fixture
def jobprogress_identity() -> str:
    """The identity the ``jobprogress_http`` client acts as (a new one per test)."""
    return new_identity()


@pytest.fixture
async def jobprogress_http(jobprogress_identity: str) -> AsyncIterator[aiohttp.ClientSession]:
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
    used = set(getattr(item, "fixturenames", ()))
    if report.failed and used & {"jobprogress_stack", "jobprogress_make_stack"}:
        for stack in _STACKS:
            report.sections.append(("jobprogress stack logs", stack.logs()))
    if report.failed and used & {"jobprogress_redis_cluster", "jobprogress_make_redis_cluster"}:
        for cluster in _CLUSTERS:
            report.sections.append(("jobprogress redis cluster logs", cluster.logs()))
