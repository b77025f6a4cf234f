"""The supervisor of a local run (``scripts/run``): it starts the processes, watches them,
and stops them in order: the services first, so that the worker hands its running jobs
back to Redis within its grace period, then Consul and Redis (only those it started).

It is started by the runner (:mod:`jobprogress_testing.local`) in a session of its own, with
the run's lock, and stops on SIGTERM, SIGINT or SIGHUP, which the runner passes on, and
on the SIGTERM the kernel sends it when the runner dies, however it dies. Its children
get SIGTERM from the kernel if it dies itself. Its own lines also go to ``supervisor.log``
in the run folder, with the time: its stdout may be gone.

    python -m jobprogress_testing.supervisor LOCK_FD [--redis-cluster]
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from jobprogress_core.redis_urls import is_cluster_url
from jobprogress_core.settings import DEFAULT_PORTS, Environ, Settings, WorkerSettings
from jobprogress_core.settings.environ import masked_url

from .backends import ConsulAgent, RedisServer
from .errors import StackError
from .probes import consul_answers, redis_answers
from .process import Process
from .stack import ServiceProcess, Stack

#: The supervisor's own lines, with the time, in the run folder (this run's only).
JOURNAL_NAME = "supervisor.log"


def port_variable(service: str) -> str:
    """``JOB_QUEUE_SERVICE_PORT`` and the like: where ``scripts/run`` puts a service."""
    return f"{service.upper().replace('-', '_')}_PORT"


def service_ports(env: Environ) -> dict[str, int]:
    return {
        service: env.integer(port_variable(service), port, minimum=1, maximum=65535)
        for service, port in DEFAULT_PORTS.items()
    }


def run_dir() -> Path:
    """Where the local run keeps its lock, secret, Redis data and the Redis and Consul logs."""
    return Path(os.environ.get("JOBPROGRESS_RUN_DIR", ".run")).resolve()


def checked_settings() -> WorkerSettings:
    """The worker's settings (the stop needs its grace), with the other services' settings
    read too: a mistake in any service's variables is said before anything starts."""
    worker = Settings.from_env("worker-service")
    # What every service reads, and warns about (the secret), the worker's reading has checked.
    base = logging.getLogger(Settings.__module__)
    was_disabled, base.disabled = base.disabled, True
    try:
        for service in ("job-queue-service", "progress-service"):
            Settings.from_env(service)
    finally:
        base.disabled = was_disabled
    return worker


@dataclass(frozen=True)
class Plan:
    """What ``scripts/run`` runs, read from the environment."""

    workdir: Path
    redis_url: str
    consul_addr: str
    ports: dict[str, int]
    #: How long the services get to stop: the worker's grace, then the server's own shutdown.
    stop_timeout: float
    #: A new local Redis Cluster instead of the Redis at ``redis_url`` (``--redis-cluster``).
    redis_cluster: bool = False

    @classmethod
    def from_env(cls, *, redis_cluster: bool = False) -> Plan:
        env = Environ()
        consul_host, consul_port, _ = env.host_port("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
        worker = checked_settings()
        return cls(
            workdir=run_dir(),
            redis_url=env.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0"),
            consul_addr=f"{consul_host}:{consul_port}",
            ports=service_ports(env),
            stop_timeout=worker.grace_seconds + worker.shutdown_timeout + 5,
            redis_cluster=redis_cluster,
        )


class StopAsked(Exception):
    """A signal asked the supervisor to stop."""


def supervise(lock: int, *, redis_cluster: bool = False) -> int:
    """Run the stack until a signal; ``lock`` is the run's lock, held for as long as this runs."""
    plan = Plan.from_env(redis_cluster=redis_cluster)
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)  # who holds the lock: what a second run names
    ServiceProcess.inherit_output = True  # service logs on the terminal; Redis and Consul in the run folder
    Process.die_with_parent = True
    supervisor = Supervisor(plan)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, supervisor.on_signal)
    return supervisor.run()


class Supervisor:
    """Starts the stack, watches it, and stops it whatever happens.

    The first stop signal interrupts whatever the start or the watch is waiting for
    (:class:`StopAsked`, raised once, only while that is :attr:`interruptible`); nothing
    interrupts the stop itself, except Ctrl-C twice, which kills everything at once.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        if plan.redis_cluster:
            self.stack = Stack(plan.workdir, redis_cluster=True, consul_addr=plan.consul_addr)
        else:
            self.stack = Stack(plan.workdir, redis_url=plan.redis_url, consul_addr=plan.consul_addr)
        self.journal = plan.workdir / JOURNAL_NAME
        self.journal.write_text("")
        self.interruptible = True
        self.signals: list[int] = []

    def say(self, line: str) -> None:
        """Print a line, and keep it in the journal; once stdout is gone, print no more
        (and never fail at exit)."""
        if line.strip():
            with contextlib.suppress(OSError), self.journal.open("a") as file:
                file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line.strip()}\n")
        try:
            print(line, flush=True)
        except OSError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def on_signal(self, signum: int, _: FrameType | None) -> None:
        self.signals.append(signum)
        if self.interruptible:
            self.interruptible = False
            raise StopAsked
        if self.signals.count(signal.SIGINT) == 2:  # another signal only repeats the first
            self.say(
                "stopping at once: jobs that were running are taken up again after their visibility timeout"
            )
            for process in self.stack.processes:
                process.signal(signal.SIGKILL)  # no waiting here: the stop under way waits

    def run(self) -> int:
        """0 when stopped by a signal; 1 when the start failed or a process exited by itself."""
        try:
            try:
                self.start()
                return self.watch()
            except StackError as exc:
                self.say(f"could not start: {exc}")
                return 1
            finally:
                self.interruptible = False
        except StopAsked:
            return 0
        finally:
            self.say(f"stopping: the services (within {self.plan.stop_timeout:g}s), then Consul and Redis")
            self.say("  Ctrl-C again stops everything at once.")
            self.stack.stop(self.plan.stop_timeout)
            codes = [f"{p.name} {p.popen.returncode}" for p in self.stack.processes if p.popen is not None]
            self.say(f"stopped ({', '.join(codes)}).")

    def start(self) -> None:
        stack, plan = self.stack, self.plan
        if plan.redis_cluster:
            self.start_cluster()
        else:
            self.start_redis()
        if consul_answers(plan.consul_addr):
            self.say(f"using the Consul agent that answers at {plan.consul_addr}")
        else:
            consul_port = int(plan.consul_addr.rsplit(":", 1)[1])
            self.say(f"starting consul agent -dev on 127.0.0.1:{consul_port}")
            stack.consul = ConsulAgent(plan.workdir, http_port=consul_port)
            stack.consul.start()
        for service, port in plan.ports.items():
            stack.start_service(service, port=port, wait=False)
        for process in stack.services:
            process.wait_healthy()
        try:
            stack.wait_passing()
        except StackError as exc:
            self.say(f"warning: {exc}")
        self.say("")
        self.say(f"  page:       {stack.url('progress-service')}/client/index.html")
        self.say(f"  consul ui:  http://{plan.consul_addr}/ui/")
        self.say(f"  job api:    {stack.url('job-queue-service')}/api/jobs")
        if stack.cluster is not None:
            self.say(f"  redis:      {stack.redis_url}")
        self.say("  Ctrl-C stops everything.")
        self.say("")

    def start_redis(self) -> None:
        plan = self.plan
        if is_cluster_url(plan.redis_url):  # one of its own: nothing to start
            self.say(f"using the Redis Cluster of REDIS_URL ({masked_url(plan.redis_url)})")
            return
        redis = urlsplit(plan.redis_url)
        redis_host, redis_port = redis.hostname or "127.0.0.1", redis.port or 6379
        if redis_answers(redis_host, redis_port):
            self.say(f"using the Redis that answers at {redis_host}:{redis_port}")
        else:
            self.say(f"starting redis-server on 127.0.0.1:{redis_port} (data in {plan.workdir})")
            self.stack.redis = RedisServer(plan.workdir, port=redis_port, persistent=True)
            self.stack.redis.start()

    def start_cluster(self) -> None:
        """A new one every run: its nodes keep no data, and what an earlier run left in the
        folder (``nodes.conf``) would be another cluster's."""
        shutil.rmtree(self.plan.workdir / "redis-cluster", ignore_errors=True)
        self.say("starting a new Redis Cluster on 127.0.0.1: 3 masters, 3 replicas (no data kept)")
        self.stack.start_backends()  # the cluster only: Consul has an address already
        self.say(f"Redis Cluster ready: REDIS_URL={self.stack.redis_url}")

    def watch(self) -> int:
        """Until a signal: a process that exits by itself stops the whole run (status 1)."""
        while True:
            for process in self.stack.processes:
                if not process.running:
                    code = process.popen.returncode if process.popen else None
                    self.say(f"{process.name} (pid {process.pid}) exited ({code}): stopping everything")
                    return 1
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[1]), redis_cluster="--redis-cluster" in sys.argv[2:]))
