"""Registration against a real consul agent: registered while running, gone once stopped,
even when a re-registration was due at that very moment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from jobprogress_core.consul import Registration, ServiceLookup, create_consul
from jobprogress_core.settings import Settings
from jobprogress_core.stack import ConsulAgent


async def test_stop_deregisters_and_nothing_registers_again(
    jobprogress_consul: ConsulAgent, jobprogress_settings: Callable[..., Settings]
) -> None:
    settings = jobprogress_settings(
        "job-queue-service",
        CONSUL_HTTP_ADDR=jobprogress_consul.address,
        JOBPROGRESS_CONSUL_RETRY_SECONDS="0.1",
        JOBPROGRESS_PORT="18081",
    )
    client = create_consul(settings)
    registration = Registration(settings, client)
    try:
        registration.start()
        for _ in range(100):
            if await registration.is_known():
                break
            await asyncio.sleep(0.05)
        assert await registration.is_known()
        definition = (await client.agent.services())[registration.service_id]
        assert definition["Service"] == "job-queue-service" and definition["Port"] == 18081
        assert definition["Meta"]["version"]

        await registration.stop()
        await asyncio.sleep(0.5)  # several retry periods: the loop must not register again
        assert not await registration.is_known()
        await registration.stop()  # idempotent
    finally:
        await client.http.close()


async def test_lookup_returns_passing_instances_in_rotation(
    jobprogress_consul: ConsulAgent, jobprogress_settings: Callable[..., Settings]
) -> None:
    settings = jobprogress_settings(CONSUL_HTTP_ADDR=jobprogress_consul.address)
    client = create_consul(settings)
    try:
        ids = [f"lookup-test-{n}" for n in range(3)]
        for n, service_id in enumerate(ids):
            check = {"TTL": "30s", "Status": "passing"} if n < 2 else {"TTL": "30s", "Status": "critical"}
            await client.agent.service.register(
                "lookup-test", service_id=service_id, port=9000 + n, check=check
            )
        lookup = ServiceLookup(client, "lookup-test", cache_seconds=0)
        first, second = await lookup.rotation(), await lookup.rotation()
        assert {i.service_id for i in first} == set(ids[:2])  # the critical one is never offered
        assert first[0] != second[0] and sorted(first, key=str) == sorted(second, key=str)
        for service_id in ids:
            await client.agent.service.deregister(service_id)
    finally:
        await client.http.close()
