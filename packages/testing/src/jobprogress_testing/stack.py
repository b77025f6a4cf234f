"""The whole system as local processes: ``redis-server`` (or a local Redis Cluster),
``consul agent -dev`` and the three services, each on a free (or given) port.

Used by ``scripts/run`` (:mod:`jobprogress_testing.local`) to run everything locally, by the
pytest plugin (:mod:`jobprogress_testing.plugin`) for end-to-end tests against real
processes, and by the benchmarks. Synchronous on purpose: it only starts, waits for and
stops processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .backends import ConsulAgent, RedisServer
from .cluster import RedisCluster
from .errors import StackError
from .ports import free_port
from .probes import consul_health, http_get
from .process import Process

__all__ = ["SERVICE_MODULES", "ServiceProcess", "Stack"]

SERVICE_MODULES = {
    "job-queue-service": "job_queue_service",
    "worker-service": "worker_service",
    "progress-service": "progress_service",
}


class ServiceProcess(Process):
    def __init__(self, service: str, env: dict[str, str], workdir: Path, port: int | None = None) -> None:
        self.service = service
        self.port = port or free_port()
        full_env = {**env, "JOBPROGRESS_PORT": str(self.port)}
        argv = [sys.executable, "-m", SERVICE_MODULES[service]]
        super().__init__(service, argv, full_env, workdir / f"{service}-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        super().start()
        if wait:
            self.wait_healthy()

    def wait_healthy(self) -> None:
        self.wait_until(lambda: http_get(f"{self.url}/health")[0] == 200, 30, "healthy")


class Stack:
    """Redis, Consul and any number of service processes sharing one environment.

    With ``redis_cluster``, :meth:`start_backends` starts a local Redis Cluster
    (:class:`RedisCluster`: three masters, three replicas) instead of one ``redis-server``,
    and the services get its ``redis+cluster://`` URL as ``REDIS_URL``.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        persistent_redis: bool = False,
        redis_url: str | None = None,
        consul_addr: str | None = None,
        env: dict[str, str] | None = None,
        redis_cluster: bool = False,
    ) -> None:
        if redis_cluster and (redis_url is not None or persistent_redis):
            raise ValueError("redis_cluster starts a cluster of its own, whose nodes keep no data")
        #: A folder of our own making is removed by :meth:`stop`; a given one is left as it is.
        self.own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="jobprogress-stack-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis: RedisServer | None = None
        self.cluster: RedisCluster | None = None
        self.redis_cluster = redis_cluster
        self.consul: ConsulAgent | None = None
        self.redis_url = redis_url
        self.consul_addr = consul_addr
        self.extra_env = env or {}
        self.persistent_redis = persistent_redis
        self.services: list[ServiceProcess] = []

    def start_backends(self) -> None:
        if self.redis_url is None and self.redis_cluster:
            self.cluster = RedisCluster(self.workdir / "redis-cluster")
            self.cluster.start()
            self.redis_url = self.cluster.url
        elif self.redis_url is None:
            self.redis = RedisServer(self.workdir, persistent=self.persistent_redis)
            self.redis.start()
            self.redis_url = self.redis.url
        if self.consul_addr is None:
            self.consul = ConsulAgent(self.workdir)
            self.consul.start()
            self.consul_addr = self.consul.address

    def env(self, **overrides: str) -> dict[str, str]:
        assert self.redis_url is not None and self.consul_addr is not None, "start_backends() first"
        base = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "CONSUL_HTTP_ADDR": self.consul_addr,
            "JOBPROGRESS_HOST": "127.0.0.1",
            **self.extra_env,
        }
        return {**base, **overrides}

    def start_service(
        self, service: str, *, port: int | None = None, wait: bool = True, **env: str
    ) -> ServiceProcess:
        process = ServiceProcess(service, self.env(**env), self.workdir, port)
        self.services.append(process)
        process.start(wait=wait)
        return process

    def service(self, name: str) -> ServiceProcess:
        """The first running instance of ``name``."""
        for process in self.services:
            if process.service == name and process.running:
                return process
        raise StackError(f"no running {name}")

    def url(self, name: str) -> str:
        return self.service(name).url

    def wait_passing(self, timeout: float = 30) -> None:
        """Block until Consul lists every running service instance as passing."""
        assert self.consul_addr is not None
        deadline = time.monotonic() + timeout
        while True:
            waiting = [process for process in self.services if process.running and not self._passing(process)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{p.service}:{p.port}" for p in waiting)
                raise StackError(f"not passing in Consul after {timeout:g}s: {names}")
            time.sleep(0.1)

    def _passing(self, process: ServiceProcess) -> bool:
        assert self.consul_addr is not None
        try:
            entries = consul_health(self.consul_addr, process.service, passing=True)
        except StackError:
            return False
        return any(entry["Service"]["Port"] == process.port for entry in entries)

    @property
    def processes(self) -> list[Process]:
        """Every process of this stack: the services, then Consul and Redis (or the cluster's
        nodes) if it runs them."""
        nodes = self.cluster.nodes if self.cluster is not None else []
        return [
            process for process in [*self.services, self.consul, self.redis, *nodes] if process is not None
        ]

    def logs(self) -> str:
        return "\n".join(
            f"----- {process.name} ({process.log_path.name}) -----\n{process.log_tail(60)}"
            for process in self.processes
        )

    def stop_services(self, timeout: float = 15.0) -> None:
        """SIGTERM to every service at once, then wait for each (SIGKILL after ``timeout``)."""
        for process in self.services:
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in reversed(self.services):
            process.stop(max(deadline - time.monotonic(), 0.1))

    def stop(self, timeout: float = 15.0) -> None:
        """The services first (a worker hands its jobs back to Redis), then Consul and Redis."""
        self.stop_services(timeout)
        if self.consul is not None:
            self.consul.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            self.start_backends()
            yield self
        finally:
            self.stop()
