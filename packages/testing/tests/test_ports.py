"""The stack's free ports: never where outgoing connections take theirs, never twice, and
never one another process has just picked for a process of its own."""

from __future__ import annotations

import random
import socket
import subprocess
import sys

import pytest

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
