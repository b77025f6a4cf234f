"""Development and test tooling of jobprogress: the whole system as real local processes.

Never installed in a service image. Its pytest plugin (``jobprogress_testing.plugin``, loaded
wherever this package is installed) gives fixtures named ``jobprogress_*``: the stack, its
Redis and Consul, settings and a store for in-process tests, and an HTTP client acting as an
identity of its own::

    from jobprogress_testing import eventually

    async def test_a_job_completes(jobprogress_stack, jobprogress_http):
        base = jobprogress_stack.url("progress-service")
        ...
"""

from .backends import ConsulAgent, RedisServer, consul_binary
from .cluster import RedisCluster
from .cluster_node import RedisClusterNode
from .commands import run_cli, start_cli
from .environment import TEST_ENV, TEST_SECRET_KEY, bearer_headers
from .errors import StackError
from .ports import cache_dir, free_port
from .probes import consul_answers, consul_health, http_get, redis_answers
from .process import Process, die_with_parent
from .stack import SERVICE_MODULES, ServiceProcess, Stack
from .waiting import eventually

__all__ = [
    "SERVICE_MODULES",
    "TEST_ENV",
    "TEST_SECRET_KEY",
    "ConsulAgent",
    "Process",
    "RedisCluster",
    "RedisClusterNode",
    "RedisServer",
    "ServiceProcess",
    "Stack",
    "StackError",
    "bearer_headers",
    "cache_dir",
    "consul_answers",
    "consul_binary",
    "consul_health",
    "die_with_parent",
    "eventually",
    "free_port",
    "http_get",
    "redis_answers",
    "run_cli",
    "start_cli",
]
