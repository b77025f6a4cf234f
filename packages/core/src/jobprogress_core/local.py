"""Run the whole system locally (``scripts/run``).

Reuses Redis at ``REDIS_URL`` and Consul at ``CONSUL_HTTP_ADDR`` when they answer, else
starts a local ``redis-server`` and ``consul agent -dev`` on those ports; then starts the
three services on their ports, prints where to look, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from .settings import DEFAULT_PORTS, ConfigError, Environ
from .stack import (
    ConsulAgent,
    RedisServer,
    ServiceProcess,
    Stack,
    StackError,
    consul_answers,
    redis_answers,
)


def local_secret(workdir: Path) -> str:
    """The signing key the local services share when ``JOBPROGRESS_SECRET_KEY`` is not set:
    made once and kept in ``workdir`` (readable by this user only), so the page's identity
    and its share links outlive a restart."""
    path = workdir / "secret-key"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32))
        print(f"JOBPROGRESS_SECRET_KEY is not set: the services share a key kept in {path}")
    return path.read_text().strip()


def main() -> int:
    env = Environ()
    try:
        redis_url = env.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0")
        consul_host, consul_port, _ = env.host_port("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
        ports = {
            service: env.integer(f"{service.upper().replace('-', '_')}_PORT", port, minimum=1, maximum=65535)
            for service, port in DEFAULT_PORTS.items()
        }
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    workdir = Path(os.environ.get("JOBPROGRESS_RUN_DIR", ".run")).resolve()
    ServiceProcess.inherit_output = True  # service logs on the terminal; Redis and Consul in .run/
    # Consul checks /health this often; short, so the page can reach a job-queue at once.
    shared = {"JOBPROGRESS_CONSUL_CHECK_INTERVAL": os.environ.get("JOBPROGRESS_CONSUL_CHECK_INTERVAL", "2")}
    if not os.environ.get("JOBPROGRESS_SECRET_KEY"):
        shared["JOBPROGRESS_SECRET_KEY"] = local_secret(workdir)
    stack = Stack(workdir, redis_url=redis_url, consul_addr=f"{consul_host}:{consul_port}", env=shared)

    redis_host, redis_port = urlsplit(redis_url).hostname or "127.0.0.1", urlsplit(redis_url).port or 6379
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if redis_answers(redis_host, redis_port):
            print(f"using the Redis that answers at {redis_host}:{redis_port}")
        else:
            print(f"starting redis-server on 127.0.0.1:{redis_port}")
            stack.redis = RedisServer(workdir, port=redis_port)
            stack.redis.start()
        if consul_answers(f"{consul_host}:{consul_port}"):
            print(f"using the Consul agent that answers at {consul_host}:{consul_port}")
        else:
            print(f"starting consul agent -dev on 127.0.0.1:{consul_port}")
            stack.consul = ConsulAgent(workdir, http_port=consul_port)
            stack.consul.start()
        for service, port in ports.items():
            stack.start_service(service, port=port)
        try:
            stack.wait_passing()
        except StackError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        progress = stack.services[-1].url
        print()
        print(f"  page:       {progress}/client/index.html")
        print(f"  consul ui:  http://{consul_host}:{consul_port}/ui/")
        print(f"  job api:    {stack.services[0].url}/api/jobs")
        print("  Ctrl-C stops everything.")
        print()
        stop.wait()
    except StackError as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping...")
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
