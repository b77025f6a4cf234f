"""The Consul client that registration (:mod:`.registration`) and lookups
(:mod:`.discovery`) share: how one is made, the errors it raises, and an instance as
Consul names one."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import aiohttp
import consul.aio
from consul.exceptions import ConsulException

from .settings import Settings

__all__ = ["CONSUL_ERRORS", "Instance", "create_consul"]

CONSUL_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ConsulException)


def create_consul(settings: Settings, *, timeout: float = 10.0) -> consul.aio.Consul:
    """An asyncio Consul client; must be called inside a running event loop."""
    with warnings.catch_warnings():
        # py-consul 1.8 passes aiohttp's deprecated ``ssl_context`` argument.
        warnings.filterwarnings("ignore", message=".*ssl_context.*", category=DeprecationWarning)
        return consul.aio.Consul(
            host=settings.consul_host,
            port=settings.consul_port,
            scheme=settings.consul_scheme,
            token=str(settings.consul_token) if settings.consul_token else None,
            connections_timeout=timeout,
        )


@dataclass(frozen=True)
class Instance:
    service_id: str
    address: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"
