"""Asking a process whether it answers yet: Redis, Consul and HTTP, synchronously."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from .errors import StackError

__all__ = ["consul_answers", "consul_health", "http_get", "redis_answers"]


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
