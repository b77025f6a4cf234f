"""Run the whole system locally (``scripts/run [--redis-cluster]``).

Reuses Redis at ``REDIS_URL`` and Consul at ``CONSUL_HTTP_ADDR`` when they answer, else
starts a local ``redis-server`` (persistent, in the run folder) and ``consul agent -dev`` on
those ports; then starts the three services, prints where to look, and stops everything
when it is told to. With ``--redis-cluster`` it starts a new local Redis Cluster instead
(three masters, three replicas, on free ports; its data does not outlive the run) instead
of the Redis of ``REDIS_URL``.

Two processes, so that every ending stops everything in order:

- the **runner** (this module, the process ``scripts/run`` becomes) refuses to start a
  second run in the same folder or on ports in use, starts the supervisor, relays its
  output and passes signals on;
- the **supervisor** (:mod:`jobprogress_testing.supervisor`) starts the processes and stops
  them, the services first.

Ctrl-C, SIGTERM and SIGHUP reach the runner, which passes them on; a runner whose stdout
is gone (``scripts/run | tee log`` with ``tee`` dead) tells the supervisor to stop; a runner
killed outright (SIGKILL) makes the kernel send SIGTERM to the supervisor, which stops as
on any other signal. A second Ctrl-C stops everything at once.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from jobprogress_core.settings import ConfigError, Environ

from .process import die_with_parent
from .supervisor import Plan, port_variable, run_dir, service_ports

LOCK_NAME = "run.lock"
#: What the runner answers when its own stdout has gone away.
EXIT_STDOUT_GONE = 1


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


class Refused(Exception):
    """The run cannot start; the message says why in one line."""


def take_lock(workdir: Path) -> int:
    """Hold ``run.lock`` in ``workdir`` (the supervisor inherits it and writes its pid there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise Refused(
            f"scripts/run is already running from {workdir} (pid {holder}): stop that one first"
        ) from None
    return fd


def check_ports() -> None:
    for service, port in service_ports(Environ()).items():
        if port_in_use(port):
            raise Refused(
                f"port {port} ({service}) is in use: stop what uses it, or set {port_variable(service)}"
            )


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/run",
        description="Run the whole system locally: Redis and Consul (reused when they answer, "
        "else started), the three services, and the page. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="start a new local Redis Cluster (3 masters, 3 replicas, free ports, no data kept) "
        "instead of using or starting the redis-server of REDIS_URL",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    workdir = run_dir()
    try:
        lock = take_lock(workdir)
        check_ports()
        if not os.environ.get("JOBPROGRESS_SECRET_KEY"):
            os.environ["JOBPROGRESS_SECRET_KEY"] = local_secret(workdir)  # for every process started
        Plan.from_env(redis_cluster=args.redis_cluster)  # the supervisor reads it again; said here, once
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    command = [sys.executable, "-m", "jobprogress_testing.supervisor", str(lock)]
    supervisor = subprocess.Popen(
        [*command, "--redis-cluster"] if args.redis_cluster else command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the terminal's signals reach the runner only; it passes them on
        pass_fds=(lock,),
        preexec_fn=die_with_parent(),
    )
    os.close(lock)  # the supervisor holds it now, as long as it runs
    return relay(supervisor)


def relay(supervisor: subprocess.Popen[bytes]) -> int:
    """Copy the supervisor's output to stdout and pass signals on, until it exits."""

    def pass_on(signum: int, _: FrameType | None) -> None:
        if supervisor.poll() is None:
            supervisor.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, pass_on)
    assert supervisor.stdout is not None
    source, stdout = supervisor.stdout.fileno(), sys.stdout.fileno()
    poller = select.poll()
    poller.register(source, select.POLLIN)
    poller.register(stdout, 0)  # errors only: the reader of a pipe has gone
    stdout_gone = False

    def lose_stdout() -> None:
        nonlocal stdout_gone
        stdout_gone = True
        poller.unregister(stdout)
        pass_on(signal.SIGTERM, None)

    while True:
        exited = supervisor.poll() is not None
        ready = dict(poller.poll(100 if exited else 500))
        if stdout in ready:
            lose_stdout()
        if source in ready:
            data = os.read(source, 65536)
            if not data:
                break  # nobody writes to it any more
            if not stdout_gone:
                try:
                    write_all(stdout, data)
                except OSError:
                    lose_stdout()
        elif exited:
            break  # drained (a child it left behind may still hold the pipe open)
    code = supervisor.wait()
    if stdout_gone:
        return EXIT_STDOUT_GONE
    return 128 - code if code < 0 else code  # killed by a signal: as a shell would say it


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    sys.exit(main())
