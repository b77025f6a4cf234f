"""The stack's free ports: never where outgoing connections take theirs, never twice, and
never one another process has just picked for a process of its own."""

from __future__ import annotations

import random
import socket
import subprocess
import sys

import pytest

from jobprogress_testing import ports
from jobprogress_testing.ports import ephemeral_ports, free_port, reserve


def test_free_ports_are_bindable_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < ephemeral_ports().start for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # nothing took it


def test_a_port_another_process_picked_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other process picks a port and keeps it unbound, as a test does for the services a
    runner will start; ours draws that very port first, and must pass it by."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from jobprogress_testing import free_port; print(free_port(), flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        taken = int(holder.stdout.readline())
        draws = iter([taken, taken, *range(ephemeral_ports().start - 1, 1024, -1)])
        monkeypatch.setattr(random, "randrange", lambda *_: next(draws))
        assert free_port() != taken
    finally:
        holder.communicate("\n", timeout=10)
    assert reserve(taken)  # released with the process that held it


def test_a_cluster_node_port_comes_with_its_bus_port_free_and_reserved_too() -> None:
    """A Redis Cluster node listens on port + 10000 as well: that one is free, below 65536,
    and never handed out again, as a port of its own or as another node's bus."""
    ports = [free_port(bus_offset=10000) for _ in range(20)]
    taken = [*ports, *(port + 10000 for port in ports)]
    assert len(set(taken)) == len(taken)
    assert all(1024 <= port <= 55535 for port in ports)
    assert all(port < ephemeral_ports().start for port in taken)  # the kernel's range leaves room
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1] + 10000))
    assert all(free_port() not in taken for _ in range(200))


def test_with_little_room_below_the_ephemeral_range_the_bus_port_may_lie_above_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the kernel's range starts too low for both below it, the bus port goes above,
    still at most 65535."""
    monkeypatch.setattr(ports, "ephemeral_ports", lambda: range(9000, 65536))
    port = free_port(bus_offset=10000)
    assert 1024 <= port < 9000 < port + 10000 <= 65535
