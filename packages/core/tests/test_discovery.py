"""Lookups against a real consul agent, by blocking query: passing instances only, in
rotation, the last answer kept while Consul is away."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from jobprogress_core.consul_client import CONSUL_ERRORS, create_consul
from jobprogress_core.discovery import ConsulUnavailable, ServiceLookup, next_index_of
from jobprogress_core.settings import Settings
from jobprogress_testing import ConsulAgent, eventually, free_port


async def test_lookup_returns_passing_instances_in_rotation(
    jobprogress_consul: ConsulAgent, jobprogress_settings: Callable[..., Settings]
) -> None:
    settings = jobprogress_settings(CONSUL_HTTP_ADDR=jobprogress_consul.address)
    client = create_consul(settings)
    lookup = ServiceLookup(settings, "lookup-test")
    ids = [f"lookup-test-{n}" for n in range(3)]
    try:
        for n, service_id in enumerate(ids):
            check = {"TTL": "30s", "Status": "passing"} if n < 2 else {"TTL": "30s", "Status": "critical"}
            await client.agent.service.register(
                "lookup-test", service_id=service_id, port=9000 + n, check=check
            )
        lookup.start()
        first, second = await lookup.rotation(), await lookup.rotation()
        assert {i.service_id for i in first} == set(ids[:2])  # the critical one is never offered
        assert first[0] != second[0] and sorted(first, key=str) == sorted(second, key=str)

        lookup.suspect(first[0])  # it did not answer: offered last, whoever's turn it is
        assert [(await lookup.rotation())[-1] for _ in range(4)] == [first[0]] * 4
    finally:
        await lookup.stop()
        for service_id in ids:
            await client.agent.service.deregister(service_id)
        await client.http.close()


async def test_lookup_follows_consul_with_a_blocking_query_and_asks_nothing_per_call(
    jobprogress_consul: ConsulAgent, jobprogress_settings: Callable[..., Settings]
) -> None:
    """A change reaches the lookup within moments though its long-poll waits 55 s (so it
    came from Consul answering the blocking query), and lookups in between cost no query."""
    settings = jobprogress_settings(CONSUL_HTTP_ADDR=jobprogress_consul.address)
    client = create_consul(settings)
    lookup = ServiceLookup(settings, "watch-test", wait_seconds=55)
    check = {"TTL": "30s", "Status": "passing"}
    try:
        await client.agent.service.register("watch-test", service_id="watch-test-0", port=9100, check=check)
        lookup.start()
        assert [i.port for i in await lookup.instances()] == [9100]
        answers = lookup.answers
        for _ in range(20):
            await lookup.rotation()
            await asyncio.sleep(0.05)
        # Served from what the watch holds, and the watch waits (at most a stray wake-up).
        assert lookup.answers - answers <= 2

        await client.agent.service.register("watch-test", service_id="watch-test-1", port=9101, check=check)
        await eventually(lambda: len(lookup._instances) == 2, "a new instance seen", timeout=5)
        assert {i.port for i in await lookup.instances()} == {9100, 9101}

        await client.agent.check.ttl_fail("service:watch-test-0", "stuck")
        await eventually(
            lambda: [i.port for i in lookup._instances] == [9101],
            "the critical instance no longer offered",
            timeout=5,
        )
    finally:
        await lookup.stop()
        for service_id in ("watch-test-0", "watch-test-1"):
            await client.agent.service.deregister(service_id)
        await client.http.close()


async def test_a_rotation_with_nobody_passing_waits_a_moment_for_an_instance_to_arrive(
    jobprogress_consul: ConsulAgent, jobprogress_settings: Callable[..., Settings]
) -> None:
    settings = jobprogress_settings(CONSUL_HTTP_ADDR=jobprogress_consul.address)
    client = create_consul(settings)
    lookup = ServiceLookup(settings, "arrival-test", wait_seconds=55)
    try:
        lookup.start()
        assert await lookup.rotation() == []  # no wait asked: at once
        assert await lookup.rotation(wait=0.2) == []  # nobody came

        waiting = asyncio.create_task(lookup.rotation(wait=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        check = {"TTL": "30s", "Status": "passing"}
        await client.agent.service.register(
            "arrival-test", service_id="arrival-test-0", port=9300, check=check
        )
        async with asyncio.timeout(10):
            assert [i.port for i in await waiting] == [9300]
    finally:
        await lookup.stop()
        await client.agent.service.deregister("arrival-test-0")
        await client.http.close()


async def test_lookup_keeps_the_last_answer_while_consul_is_away_and_follows_a_new_agent(
    tmp_path: Path, jobprogress_settings: Callable[..., Settings]
) -> None:
    agent = ConsulAgent(tmp_path)
    agent.start()
    settings = jobprogress_settings(CONSUL_HTTP_ADDR=agent.address)
    lookup = ServiceLookup(settings, "away-test", wait_seconds=55)
    check = {"TTL": "60s", "Status": "passing"}
    try:
        client = create_consul(settings)
        await client.agent.service.register("away-test", service_id="away-test-0", port=9200, check=check)
        await client.http.close()
        lookup.start()
        assert [i.port for i in await lookup.rotation()] == [9200]

        agent.stop()
        await eventually(lambda: lookup._error is not None, "the long-poll failing")
        assert [i.port for i in await lookup.rotation()] == [9200]

        agent.start()  # a fresh dev agent: nothing registered, indexes start again
        client = create_consul(settings)
        await client.agent.service.register("away-test", service_id="away-test-1", port=9201, check=check)
        await client.http.close()
        await eventually(
            lambda: [i.port for i in lookup._instances] == [9201],
            "the lookup follows the new agent",
            timeout=20,
        )
    finally:
        await lookup.stop()
        agent.stop()


async def test_a_lookup_with_no_consul_ever_says_so(
    jobprogress_settings: Callable[..., Settings],
) -> None:
    settings = jobprogress_settings(CONSUL_HTTP_ADDR=f"127.0.0.1:{free_port()}")
    lookup = ServiceLookup(settings, "nobody")
    lookup.start()
    try:
        with pytest.raises(CONSUL_ERRORS) as first:
            await lookup.rotation()
        with pytest.raises(ConsulUnavailable) as second:
            await lookup.rotation()
        assert first.value is not second.value  # a fresh error each time, its traceback short
    finally:
        await lookup.stop()


@pytest.mark.parametrize(
    ("previous", "answered", "expected"),
    [(None, 0, 1), (None, 7, 7), (7, 7, 7), (7, 9, 9), (9, 3, None)],
)
def test_the_next_blocking_query_index(previous: int | None, answered: int, expected: int | None) -> None:
    """Never 0 (every query would return at once); back to none (a fresh start) when the
    answer's index went back, as after the agent was replaced."""
    assert next_index_of(previous, answered) == expected
