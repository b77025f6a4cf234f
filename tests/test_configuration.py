"""Each service reads its own variables and no other's, as the README's configuration table
says: it stops at start when one of its own has a bad value, naming it (exit code 2), and
starts whatever a variable that only another service reads says."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobprogress_core.settings import DEFAULT_PORTS, Settings
from jobprogress_testing import Stack

README = Path(__file__).resolve().parents[1] / "README.md"
READERS = {"job-queue": "job-queue-service", "worker": "worker-service", "progress": "progress-service"}


def documented_readers() -> dict[str, set[str]]:
    """Each variable of the README's configuration table, with the services it says read it."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n#", 1)[0]
    readers: dict[str, set[str]] = {}
    for row in re.findall(r"^\| (`.+)$", section, flags=re.MULTILINE):
        variables, read_by = row.split(" | ")[:2]
        services = set(DEFAULT_PORTS) if read_by == "all" else {READERS[name] for name in read_by.split(", ")}
        for variable in re.findall(r"`([A-Z][A-Z0-9_]*)`", variables):
            readers[variable] = services
    return readers


class Recording(dict[str, str]):
    """An environment that notes every variable looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.looked_up: set[str] = set()

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.looked_up.add(name)
        return super().get(name, default)


@pytest.mark.parametrize("service", DEFAULT_PORTS)
def test_a_service_reads_the_variables_the_readme_gives_it(service: str) -> None:
    environ = Recording({"JOBPROGRESS_SECRET_KEY": "x" * 40})
    Settings.from_env(service, environ)
    documented = {variable for variable, readers in documented_readers().items() if service in readers}
    assert environ.looked_up == documented


def run_module(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    module = service.replace("-", "_")
    return subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.stack
@pytest.mark.parametrize(
    ("variable", "value", "reader"),
    [
        ("JOBPROGRESS_SSE_HEARTBEAT_SECONDS", "nan", "progress-service"),
        ("JOBPROGRESS_WORKER_CONCURRENCY", "many", "worker-service"),
        ("JOBPROGRESS_JOB_TYPES", "Build, !", "job-queue-service"),
    ],
)
def test_only_the_service_that_reads_a_variable_refuses_its_bad_value(
    jobprogress_stack: Stack, variable: str, value: str, reader: str
) -> None:
    # Keys of their own: the worker started here takes no other test's jobs.
    env = {variable: value, "JOBPROGRESS_KEY_PREFIX": f"config-{uuid.uuid4().hex[:8]}:"}
    refused = run_module(reader, jobprogress_stack.env(**env))
    assert refused.returncode == 2, refused.stderr
    assert f"{reader}: configuration error: {variable}=" in refused.stderr
    assert "Traceback" not in refused.stderr
    for service in sorted(DEFAULT_PORTS.keys() - {reader}):
        process = jobprogress_stack.start_service(service, **env)  # healthy, else this fails
        assert process.stop() == 0, process.log_tail(40)
