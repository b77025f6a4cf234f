"""The backing services as private processes: ``redis-server`` and ``consul agent -dev``."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import StackError
from .ports import cache_dir, free_port
from .probes import consul_answers, consul_health, redis_answers
from .process import Process

__all__ = ["ConsulAgent", "RedisServer", "consul_binary"]


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


class RedisServer(Process):
    """A private ``redis-server``; with ``persistent`` it keeps an append-only file, so it
    can be restarted (:meth:`restart`) without losing data."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, persistent: bool = False, config: Sequence[str] = ()
    ) -> None:
        """``config``: more ``--directive value`` arguments (ACL users, for one)."""
        self.port = port or free_port()
        #: Its ``--dir``: the append-only file, and a cluster node's ``nodes.conf``.
        self.data = data = workdir / f"redis-{self.port}"
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

    def start(self, wait: bool = True) -> None:
        """Start it; with ``wait``, return once it answers (else see :meth:`wait_answering`)."""
        super().start()
        if wait:
            self.wait_answering()

    def wait_answering(self) -> None:
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
