"""The whole system as local processes: ``redis-server``, ``consul agent -dev`` and the
three services, each on a free (or given) port.

Used by ``scripts/run`` (:mod:`jobprogress_core.local`) to run everything locally, by the
pytest plugin (:mod:`jobprogress_core.pytest_plugin`) for end-to-end tests against real
processes, and by the benchmarks. Synchronous on purpose: it only starts, waits for and
stops processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

SERVICE_MODULES = {
    "job-queue-service": "job_queue_service",
    "worker-service": "worker_service",
    "progress-service": "progress_service",
}


class StackError(RuntimeError):
    """A process did not start or did not become ready; the message quotes its log."""


#: Ports :func:`free_port` has handed out in this process.
_HANDED_OUT: set[int] = set()
#: How many ports below the kernel's ephemeral range :func:`free_port` picks from.
FREE_PORTS = 12000
#: The open file whose byte N this process locks when it hands out port N (see :func:`free_port`).
_reservations: int | None = None


def cache_dir() -> Path:
    """``JOBPROGRESS_CACHE``, else ``$XDG_CACHE_HOME/jobprogress`` (``~/.cache/jobprogress``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jobprogress"
    return Path(os.environ.get("JOBPROGRESS_CACHE", cache))


def ephemeral_ports() -> range:
    """Where the kernel takes the local ports of outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def reserve(port: int) -> bool:
    """Hold ``port`` for this process's life, against every other process that calls
    :func:`free_port` on this machine (a lock on byte ``port`` of one shared file, released
    by the kernel when this process ends); ``False`` when another one holds it."""
    global _reservations
    if _reservations is None:
        try:
            cache_dir().mkdir(parents=True, exist_ok=True)
            _reservations = os.open(cache_dir() / "ports.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return True  # nowhere to keep reservations: bound-or-not is all we know
    try:
        fcntl.lockf(_reservations, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError:
        return False
    return True


def free_port() -> int:
    """A port nothing listens on, for a process about to start.

    Picked below the ephemeral range: a port the kernel offers for ``bind(0)`` is one it
    may give to any outgoing connection (to Redis, say) before that process binds it. Never
    the same twice in this process, nor one that another process has just picked for a
    process of its own (a test and the ``scripts/run`` it starts both pick ports).
    """
    top = ephemeral_ports().start
    for _ in range(200):
        port = random.randrange(max(1024, top - FREE_PORTS), top)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not reserve(port):
            continue
        _HANDED_OUT.add(port)
        return port
    raise StackError(f"no free port between {max(1024, top - FREE_PORTS)} and {top}")


def consul_binary() -> str:
    """``JOBPROGRESS_CONSUL_BIN``, ``consul`` on the PATH, or the copy scripts/fetch-consul keeps."""
    configured = os.environ.get("JOBPROGRESS_CONSUL_BIN")
    if configured:
        return configured
    found = shutil.which("consul")
    if found:
        return found
    cached = cache_dir() / "consul/usr/bin/consul"
    if cached.is_file():
        return str(cached)
    raise StackError("no consul binary: run scripts/bootstrap (or set JOBPROGRESS_CONSUL_BIN)")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def redis_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")


def consul_answers(address: str, timeout: float = 1.0) -> bool:
    try:
        status, body = http_get(f"http://{address}/v1/status/leader", timeout)
    except OSError:
        return False
    return status == 200 and body.strip() not in (b"", b'""')


def consul_health(address: str, service: str, *, passing: bool = False) -> list[dict[str, Any]]:
    """Consul's health entries of a service (only passing instances with ``passing``)."""
    query = "?passing=1" if passing else ""
    status, body = http_get(f"http://{address}/v1/health/service/{service}{query}")
    if status != 200:
        raise StackError(f"consul health query failed: {status} {body[:200]!r}")
    result: list[dict[str, Any]] = json.loads(body)
    return result


#: ``prctl`` option: the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies, however it
    dies (even by SIGKILL); ``None`` where the system has no ``prctl``.

    Only for a process whose children are started by its main thread, and which runs no
    other thread: the signal follows the death of the thread that started the child.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Process:
    """A child process in its own session, its output in a log file."""

    #: Let output go to our own stdout/stderr instead of the log file (``scripts/run``).
    inherit_output = False
    #: Children get SIGTERM when this process dies (``scripts/run``; see :func:`die_with_parent`).
    die_with_parent = False

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        preexec = die_with_parent() if self.die_with_parent else None
        if self.inherit_output:
            self.popen = subprocess.Popen(self.argv, env=self.env, start_new_session=True, preexec_fn=preexec)
            return
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise StackError(f"{self.name} exited while starting:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.05)
        raise StackError(f"{self.name} not {what} after {timeout:g}s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.popen is None:
            return None
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode

    def kill(self) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()


class RedisServer(Process):
    """A private ``redis-server``; with ``persistent`` it keeps an append-only file, so it
    can be restarted (:meth:`restart`) without losing data."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, persistent: bool = False, config: Sequence[str] = ()
    ) -> None:
        """``config``: more ``--directive value`` arguments (ACL users, for one)."""
        self.port = port or free_port()
        data = workdir / f"redis-{self.port}"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if persistent else "no", "--appendfsync", "always",
            "--dir", str(data), "--protected-mode", "yes", *config,
        ]  # fmt: skip
        super().__init__("redis-server", argv, dict(os.environ), workdir / f"redis-{self.port}.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: redis_answers("127.0.0.1", self.port), 15, "answering PING")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (as an operator would, SIGTERM), stay down a while, start again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()


class ConsulAgent(Process):
    def __init__(self, workdir: Path, http_port: int | None = None, *, hcl: str = "") -> None:
        """``hcl``: more agent configuration (ACLs, for one)."""
        self.http_port = http_port or free_port()
        ports = (
            f"ports {{ http = {self.http_port} dns = -1 grpc = -1 serf_lan = {free_port()} "
            f"serf_wan = {free_port()} server = {free_port()} }}"
        )
        argv = [
            consul_binary(), "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-node", f"jobprogress-dev-{self.http_port}", "-log-level", "warn", "-hcl", ports,
            *(["-hcl", hcl] if hcl else []),
        ]  # fmt: skip
        super().__init__("consul", argv, dict(os.environ), workdir / f"consul-{self.http_port}.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: consul_answers(self.address), 30, "electing itself leader")

    def health(self, service: str, passing: bool = False) -> list[dict[str, Any]]:
        return consul_health(self.address, service, passing=passing)

    def deregister(self, service_id: str) -> None:
        """Remove an instance that could not deregister itself (it was killed)."""
        request = urllib.request.Request(
            f"http://{self.address}/v1/agent/service/deregister/{service_id}", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=5):
            pass


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
    """Redis, Consul and any number of service processes sharing one environment."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        persistent_redis: bool = False,
        redis_url: str | None = None,
        consul_addr: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        #: A folder of our own making is removed by :meth:`stop`; a given one is left as it is.
        self.own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="jobprogress-stack-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis: RedisServer | None = None
        self.consul: ConsulAgent | None = None
        self.redis_url = redis_url
        self.consul_addr = consul_addr
        self.extra_env = env or {}
        self.persistent_redis = persistent_redis
        self.services: list[ServiceProcess] = []

    def start_backends(self) -> None:
        if self.redis_url is None:
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
        """Every process of this stack: the services, then Consul and Redis if it runs them."""
        return [process for process in [*self.services, self.consul, self.redis] if process is not None]

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
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            self.start_backends()
            yield self
        finally:
            self.stop()
