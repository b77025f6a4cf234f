"""deploy/Dockerfile and the health check its containers run.

No Docker engine runs here, so the Dockerfile is checked statically; the health check
module is run for real against the stack's processes.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobprogress_core import healthcheck
from jobprogress_core.settings import DEFAULT_PORTS, Settings
from jobprogress_testing import Stack, free_port

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy/Dockerfile"


# --- the Dockerfile --------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: str | None  # the stage's name; None before the first FROM


def read_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions, continuation lines joined and comments left out, each with its stage."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    instructions, stage = [], None
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = arguments.split()
            stage = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else parts[0]
        instructions.append(Instruction(keyword, " ".join(arguments.split()), stage))
    return instructions


def stage(name: str) -> list[Instruction]:
    return [instruction for instruction in read_dockerfile() if instruction.stage == name]


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in instructions if instruction.keyword == keyword]
    assert found, f"no {keyword} in the runtime stage of deploy/Dockerfile"
    return found[-1]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_dockerfile_builds_in_one_stage_and_runs_in_another() -> None:
    stages = [i.stage for i in read_dockerfile() if i.keyword == "FROM"]

    assert stages == ["build", "runtime"], f"stages are {stages}, not a build stage then a runtime stage"
    copies = [i.arguments for i in stage("runtime") if i.keyword == "COPY"]
    assert any(arguments.startswith("--from=build ") for arguments in copies), (
        "the runtime stage takes nothing from the build stage (COPY --from=build)"
    )


def test_base_image_is_pinned_to_an_exact_python_release() -> None:
    defaults = dict(
        i.arguments.split("=", 1) for i in read_dockerfile() if i.keyword == "ARG" and i.stage is None
    )
    required = tomllib.loads((REPO / "packages/core/pyproject.toml").read_text())["project"][
        "requires-python"
    ]
    minimum = tuple(int(part) for part in required.removeprefix(">=").split("."))
    for instruction in read_dockerfile():
        if instruction.keyword != "FROM":
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), instruction.arguments)
        image = image.split()[0]
        name, _, tag = image.partition(":")
        version = re.match(r"(\d+)\.(\d+)\.(\d+)(-|$)", tag)
        assert name == "python" and version, f"{image!r} is not pinned to an exact python version tag"
        assert tuple(int(part) for part in version.groups()[:2]) >= minimum, (
            f"{image} is older than {required}"
        )


def test_image_runs_as_a_numeric_non_root_user() -> None:
    runtime = stage("runtime")
    user = last(runtime, "USER").arguments
    numeric = re.fullmatch(r"(\d+)(?::(\d+))?", user)

    assert numeric, f"USER {user} is not a numeric uid[:gid] (runAsNonRoot cannot check a name)"
    assert int(numeric.group(1)) != 0, "USER is root"
    created = " ".join(i.arguments for i in runtime if i.keyword == "RUN")
    assert f"--uid {numeric.group(1)}" in created, f"no user with uid {numeric.group(1)} is created"


def test_service_listens_on_every_interface_of_the_container() -> None:
    host = env_of(stage("runtime")).get("JOBPROGRESS_HOST")

    assert host in healthcheck.WILDCARD_HOSTS, f"JOBPROGRESS_HOST={host}: unreachable from other containers"


def test_image_health_check_asks_the_service_itself() -> None:
    runtime = stage("runtime")
    options, _, command = last(runtime, "HEALTHCHECK").arguments.partition(" CMD ")
    timeout = re.search(r"--timeout=(\d+)s", options)

    assert json.loads(command) == ["python", "-m", "jobprogress_core.healthcheck"], (
        f"HEALTHCHECK runs {command}, not python -m jobprogress_core.healthcheck"
    )
    assert timeout and int(timeout.group(1)) > healthcheck.TIMEOUT, (
        f"HEALTHCHECK {options} gives the check no more time than its own timeout ({healthcheck.TIMEOUT}s)"
    )
    assert env_of(runtime).get("SERVICE") == "${SERVICE}", "the image does not tell the check its SERVICE"


def test_image_runs_the_service_named_at_build_time() -> None:
    runtime = stage("runtime")
    command = json.loads(last(runtime, "CMD").arguments)

    assert "ARG SERVICE" in [f"{i.keyword} {i.arguments}" for i in runtime], "no SERVICE build arg"
    assert command == ["sh", "-c", 'exec "$SERVICE"'], f"CMD {command} does not exec the $SERVICE script"
    checks = [i.arguments for i in runtime if i.keyword == "RUN" and 'test -n "$SERVICE"' in i.arguments]
    assert checks, "a build without --build-arg SERVICE would succeed and give an image that runs nothing"


def test_every_copied_path_exists_and_reaches_the_build() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv"} <= ignored, "the build context would carry .git and .venv"
    for instruction in read_dockerfile():
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from="):
            *sources, _ = instruction.arguments.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
                assert source.strip("/").split("/")[0] not in ignored, f"COPY {source}: in .dockerignore"


def repo_packages() -> dict[str, tuple[str, list[str]]]:
    """Each distribution of packages/: its folder and the distributions of this repository it
    depends on."""
    found = {}
    for pyproject in REPO.glob("packages/*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        requires = [re.split(r"[<>=\[ ;]", requirement)[0] for requirement in project.get("dependencies", [])]
        found[project["name"]] = (pyproject.parent.name, requires)
    return found


def needed_folders(distribution: str) -> set[str]:
    """The folders of ``distribution`` and of every distribution of this repository it needs."""
    packages = repo_packages()
    folders, todo = set(), [distribution]
    while todo:
        folder, requires = packages[todo.pop()]
        folders.add(folder)
        todo += [name for name in requires if name in packages and packages[name][0] not in folders]
    return folders


@pytest.mark.parametrize("service", sorted(DEFAULT_PORTS))
def test_an_image_holds_its_own_service_and_what_it_needs_only(service: str) -> None:
    def built_for(text: str) -> str:  # the shell's ${SERVICE%-service}, for this service
        return text.replace("${SERVICE%-service}", service.removesuffix("-service"))

    distribution = f"jobprogress-{service.removesuffix('-service')}"
    assert distribution in repo_packages(), f"{service} is not the package {distribution}"
    (wheels,) = [
        built_for(i.arguments) for i in stage("build") if i.keyword == "RUN" and "pip wheel" in i.arguments
    ]
    (install,) = [
        built_for(i.arguments)
        for i in stage("runtime")
        if i.keyword == "RUN" and "pip install" in i.arguments
    ]
    assert set(re.findall(r"\./packages/([\w-]+)", wheels)) == needed_folders(distribution)
    assert "testing" not in needed_folders(distribution)
    assert re.findall(r"jobprogress-[\w-]+", install) == [distribution], f"the image installs: {install}"


# --- the health check module -----------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "env", "url"),
    [
        ("job-queue-service", {}, "http://127.0.0.1:8081/health"),
        ("worker-service", {"JOBPROGRESS_HOST": "0.0.0.0"}, "http://127.0.0.1:8082/health"),
        ("progress-service", {"JOBPROGRESS_HOST": "::"}, "http://127.0.0.1:8083/health"),
        (
            "progress-service",
            {"JOBPROGRESS_HOST": "::1", "JOBPROGRESS_PORT": "9000"},
            "http://[::1]:9000/health",
        ),
        ("worker-service", {"JOBPROGRESS_HOST": "10.1.2.3"}, "http://10.1.2.3:8082/health"),
    ],
)
def test_health_url_is_where_the_service_listens(service: str, env: dict[str, str], url: str) -> None:
    settings = Settings.from_env(service, {"JOBPROGRESS_SECRET_KEY": "test-secret", **env})

    assert healthcheck.health_url(settings) == url


def run_healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("JOBPROGRESS_")}
    environ.pop("SERVICE", None)
    return subprocess.run(
        [sys.executable, "-m", "jobprogress_core.healthcheck", *args],
        capture_output=True, text=True, env={**environ, **env}, timeout=30,
    )  # fmt: skip


@pytest.mark.stack
@pytest.mark.parametrize("service", DEFAULT_PORTS)
def test_healthcheck_passes_against_a_healthy_service(jobprogress_stack: Stack, service: str) -> None:
    port = str(jobprogress_stack.service(service).port)

    # As in a container: listening on the wildcard address, the service named by argument.
    result = run_healthcheck(service, JOBPROGRESS_HOST="0.0.0.0", JOBPROGRESS_PORT=port)

    assert (result.returncode, result.stderr) == (0, ""), f"healthcheck failed: {result.stderr}"


@pytest.mark.stack
def test_healthcheck_reads_the_service_from_the_environment(jobprogress_stack: Stack) -> None:
    port = str(jobprogress_stack.service("worker-service").port)

    result = run_healthcheck(SERVICE="worker-service", JOBPROGRESS_PORT=port)

    assert (result.returncode, result.stderr) == (0, ""), f"healthcheck failed: {result.stderr}"


def test_healthcheck_fails_where_nothing_listens() -> None:
    port = free_port()

    result = run_healthcheck("progress-service", JOBPROGRESS_PORT=str(port))

    assert result.returncode == 1, f"exit {result.returncode} with nothing on port {port}"
    assert len(result.stderr.splitlines()) == 1, f"not a one-line reason: {result.stderr!r}"
    assert f"127.0.0.1:{port}/health unreachable" in result.stderr, result.stderr


@pytest.fixture
def unhealthy_server() -> Iterator[int]:
    """A port answering every GET with 503, as a service whose Redis is down does."""

    class Unhealthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_healthcheck_fails_when_the_service_answers_unhealthy(unhealthy_server: int) -> None:
    result = run_healthcheck("job-queue-service", JOBPROGRESS_PORT=str(unhealthy_server))

    assert result.returncode == 1, f"exit {result.returncode} for a 503"
    assert result.stderr.strip().endswith(f"127.0.0.1:{unhealthy_server}/health answered 503"), result.stderr


@pytest.mark.parametrize(
    ("args", "reason"), [((), "no service named"), (("nope",), "unknown service 'nope'")]
)
def test_healthcheck_fails_without_a_known_service(args: tuple[str, ...], reason: str) -> None:
    result = run_healthcheck(*args)

    assert result.returncode == 1 and reason in result.stderr, f"exit {result.returncode}: {result.stderr}"
