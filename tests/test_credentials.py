"""The services against locked-down backing services: a Redis whose default user is off (an
ACL user with a password, given in ``REDIS_URL``), and a Consul agent with ACLs on, default
deny, and a token made from ``consul/jobprogress-policy.hcl`` given as ``CONSUL_HTTP_TOKEN``."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobprogress_client import collect_events, submit_job
from jobprogress_testing import TEST_ENV, ConsulAgent, RedisServer, Stack, eventually, http_get

pytestmark = pytest.mark.stack

POLICY = Path(__file__).parents[1] / "consul" / "jobprogress-policy.hcl"
MANAGEMENT = "b2f9d0c4-7f55-4d2b-9f9e-3c0f7a5d1e01"  # the test agent's own root token
REDIS_PASSWORD = "s3cret-redis-password-for-the-test"
# What the services need: their own keys, every command but the dangerous ones.
REDIS_ACL = [
    "--user", "default", "off",
    "--user", "jobprogress", "on", f">{REDIS_PASSWORD}", "~jobprogress:*", "&*", "+@all", "-@dangerous",
]  # fmt: skip
CONSUL_ACL = (
    'acl { enabled = true default_policy = "deny" enable_token_persistence = false '
    f'tokens {{ master = "{MANAGEMENT}" agent = "{MANAGEMENT}" }} }}'
)
SERVICES = ("job-queue-service", "worker-service", "progress-service")


def consul_api(address: str, method: str, path: str, body: Any = None, token: str = MANAGEMENT) -> Any:
    request = urllib.request.Request(
        f"http://{address}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Consul-Token": token},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def service_token(address: str) -> str:
    """A token with only the services' policy, made as an operator would."""
    consul_api(address, "PUT", "/v1/acl/policy", {"Name": "jobprogress", "Rules": POLICY.read_text()})
    token = consul_api(address, "PUT", "/v1/acl/token", {"Policies": [{"Name": "jobprogress"}]})
    return str(token["SecretID"])


def passing(address: str, service: str) -> list[Any]:
    return list(consul_api(address, "GET", f"/v1/health/service/{service}?passing=1"))


async def test_the_services_run_on_an_acl_redis_user_and_a_consul_token(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    redis = RedisServer(tmp_path, config=REDIS_ACL)
    consul = ConsulAgent(tmp_path, hcl=CONSUL_ACL)
    redis.start()
    consul.start()
    try:
        token = service_token(consul.address)
        url = f"redis://jobprogress:{REDIS_PASSWORD}@127.0.0.1:{redis.port}/0"
        stack = Stack(
            tmp_path, redis_url=url, consul_addr=consul.address, env={**TEST_ENV, "CONSUL_HTTP_TOKEN": token}
        )
        with stack.running():
            for service in SERVICES:
                stack.start_service(service)
            for service in SERVICES:
                await eventually(
                    lambda s=service: len(passing(consul.address, s)) == 1, f"{service} passing", timeout=30
                )
            # The page's calls reach job-queue-service through a lookup made with the token.
            progress = stack.url("progress-service")
            job_id = await submit_job(http, progress, steps=2, durationSeconds=0.2)
            events = await collect_events(http, f"{progress}/api/progress/{job_id}", timeout=30)
            assert events[-1].event == "complete"
            # The worker's last line about the job comes after the event the client saw: the
            # logs below are read whole once it is there.
            worker = stack.service("worker-service")
            await eventually(
                lambda: f"job {job_id} ended: " in worker.log_tail(10_000), "the job's end logged"
            )
            logs = "".join(service.log_tail(10_000) for service in stack.services)
            assert REDIS_PASSWORD not in logs and token not in logs
            assert "NOAUTH" not in logs and "NOPERM" not in logs and "Permission denied" not in logs

            # Without the token, Consul refuses: the service still serves, and says why.
            lone = stack.start_service("job-queue-service", CONSUL_HTTP_TOKEN="")
            refused = "consul refused the registration (check CONSUL_HTTP_TOKEN"
            await eventually(lambda: refused in lone.log_tail(), "a refusal logged", timeout=30)
            assert "Permission denied" in lone.log_tail()
            assert len(passing(consul.address, "job-queue-service")) == 1
    finally:
        consul.stop()
        redis.stop()


async def test_a_wrong_redis_password_is_a_clear_error(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, config=REDIS_ACL)
    redis.start()
    wrong = f"redis://jobprogress:wrong@127.0.0.1:{redis.port}/0"
    stack = Stack(tmp_path, redis_url=wrong, consul_addr="127.0.0.1:1", env=TEST_ENV)
    try:
        # It serves, so that /health can say that something is wrong, once it has said what.
        service = stack.start_service("job-queue-service", wait=False)
        service.wait_until(lambda: http_get(f"{service.url}/health")[0] == 503, 30, "answering 503")
        assert "refused the credentials of REDIS_URL" in service.log_tail()
        async with aiohttp.ClientSession() as http, http.get(f"{service.url}/health") as response:
            assert response.status == 503
            assert "wrong" not in await response.text()
        service.stop()
        assert "wrong@" not in service.log_tail()  # the URL is masked in every log line
    finally:
        stack.stop()
        redis.stop()
