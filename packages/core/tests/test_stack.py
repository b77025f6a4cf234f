"""The stack's free ports: never where outgoing connections take theirs, never twice."""

from __future__ import annotations

import socket

from jobprogress_core.stack import ephemeral_ports, free_port


def test_free_ports_are_bindable_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < ephemeral_ports().start for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # nothing took it
