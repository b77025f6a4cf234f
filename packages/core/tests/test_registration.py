"""Registration against a real consul agent: registered while running with the status the
instance gives itself, back to passing in Consul the moment it is healthy again, gone once
stopped, even when a re-registration was due at that very moment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from jobprogress_core.consul_client import create_consul
from jobprogress_core.health import Health
from jobprogress_core.registration import Registration
from jobprogress_core.settings import Settings
from jobprogress_testing import ConsulAgent, eventually, free_port


def health_of(answers: dict[str, bool]) -> Health:
    """A health whose one check answers ``answers["ok"]`` at the time it is asked."""
    health = Health()

    async def check() -> bool:
        return answers["ok"]

    health.add("part", check)
    return health


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
    registration = Registration(settings, client, health_of({"ok": True}))
    try:
        registration.start()
        await eventually(registration.is_known, "registered")
        definition = (await client.agent.services())[registration.service_id]
        assert definition["Service"] == "job-queue-service" and definition["Port"] == 18081
        assert definition["Meta"]["version"]

        await registration.stop()
        await asyncio.sleep(0.5)  # several retry periods: the loop must not register again
        assert not await registration.is_known()
        await registration.stop()  # idempotent
    finally:
        await client.http.close()


async def http_check_of(client: Any, registration: Registration) -> dict[str, Any]:
    """The instance's one HTTP check, as the agent has it."""
    checks = [
        check
        for check in (await client.agent.checks()).values()
        if check["ServiceID"] == registration.service_id
        and check["CheckID"].startswith(f"{registration.service_id}:http")
    ]
    assert len(checks) == 1, checks
    return dict(checks[0])


async def test_consul_hears_the_instances_own_status_at_once_and_its_recovery_within_moments(
    jobprogress_consul: ConsulAgent, jobprogress_settings: Callable[..., Settings]
) -> None:
    """Consul's own check runs every 60 s here: any status seen sooner came from the instance."""
    settings = jobprogress_settings(
        "job-queue-service",
        CONSUL_HTTP_ADDR=jobprogress_consul.address,
        JOBPROGRESS_CONSUL_CHECK_INTERVAL="60",
        JOBPROGRESS_PORT=str(free_port()),
    )
    client = create_consul(settings)
    answers = {"ok": False}
    registration = Registration(settings, client, health_of(answers))
    try:
        registration.start()
        await eventually(registration.is_known, "registered")
        first = await http_check_of(client, registration)
        assert first["Status"] == "critical"  # what the instance said of itself, not a default

        answers["ok"] = True

        def passing_in_consul() -> bool:
            passing = jobprogress_consul.health("job-queue-service", passing=True)
            return any(entry["Service"]["ID"] == registration.service_id for entry in passing)

        await eventually(passing_in_consul, "passing in consul", timeout=5)
        now = await http_check_of(client, registration)
        assert now["Status"] == "passing" and now["CheckID"] != first["CheckID"]  # the old one is gone

        # A stop deregisters every check; a healthy start registers passing from the first moment.
        await registration.stop()
        again = Registration(settings, client, health_of(answers))
        again.start()
        try:
            await eventually(again.is_known, "registered again")
            assert (await http_check_of(client, again))["Status"] == "passing"
        finally:
            await again.stop()
    finally:
        await registration.stop()
        await client.http.close()
