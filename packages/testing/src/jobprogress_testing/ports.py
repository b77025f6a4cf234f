"""Free ports for processes about to start, reserved against every other process on
this machine that picks ports the same way."""

from __future__ import annotations

import fcntl
import os
import random
import socket
from pathlib import Path

from .errors import StackError

__all__ = ["FREE_PORTS", "bindable", "cache_dir", "ephemeral_ports", "free_port", "release", "reserve"]

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


def release(port: int) -> None:
    """Give back a reservation :func:`reserve` took (its pair could not be had)."""
    if _reservations is not None:
        fcntl.lockf(_reservations, fcntl.LOCK_UN, 1, port)


def free_port(*, bus_offset: int = 0) -> int:
    """A port nothing listens on, for a process about to start.

    Picked below the ephemeral range: a port the kernel offers for ``bind(0)`` is one it
    may give to any outgoing connection (to Redis, say) before that process binds it. Never
    the same twice in this process, nor one that another process has just picked for a
    process of its own (a test and the ``scripts/run`` it starts both pick ports).

    With ``bus_offset``, ``port + bus_offset`` is free, reserved and handed out too: a Redis
    Cluster node listens there for its cluster bus (``port + 10000``). Both stay below the
    ephemeral range when it leaves room for that, and the second one at most 65535.
    """
    top = ephemeral_ports().start
    low = max(1024, top - FREE_PORTS)
    high = top - bus_offset if top - bus_offset > low else min(top, 65536 - bus_offset)
    if high <= low:
        raise StackError(f"no room for a port and its port + {bus_offset} below {top}")
    for _ in range(200):
        port = random.randrange(low, high)
        wanted = [port, port + bus_offset] if bus_offset else [port]
        if any(each in _HANDED_OUT or not bindable(each) for each in wanted):
            continue
        held = []
        for each in wanted:
            if not reserve(each):
                break
            held.append(each)
        if len(held) < len(wanted):
            for each in held:
                release(each)
            continue
        _HANDED_OUT.update(wanted)
        return port
    raise StackError(
        f"no free port between {low} and {high}" + (f" (and + {bus_offset})" if bus_offset else "")
    )


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
