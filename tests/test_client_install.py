"""``jobprogress-client`` installs alone: a fresh virtualenv with only it and aiohttp runs the
``jobprogress`` command against the real stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

CLIENT = Path(__file__).resolve().parents[1] / "packages" / "client"
#: What a service needs and a client must not pull in (nor Celery: only its extra brings it).
SERVER_SIDE = (
    "jobprogress_core",
    "redis",
    "consul",
    "jwt",
    "prometheus_client",
    "aiohttp_security",
    "celery",
)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the client installed in it (from a copy of its source, built
    the way pip builds any package), and what pip brings along."""
    root = tmp_path_factory.mktemp("client")
    source = shutil.copytree(CLIENT, root / "client", ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(source)],
        check=True,
    )  # fmt: skip
    return venv


def in_venv(venv: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(argv, env={**clean, **env}, cwd=venv, capture_output=True, text=True, timeout=120)


def test_the_client_depends_on_aiohttp_only(client_venv: Path) -> None:
    python = str(client_venv / "bin" / "python")
    probe = (
        "import importlib.metadata as m, importlib.util as u, json, sys;"
        "print(json.dumps({'requires': m.requires('jobprogress-client'),"
        f" 'present': [n for n in {list(SERVER_SIDE)!r} if u.find_spec(n)]}}))"
    )
    found = in_venv(client_venv, python, "-c", probe)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    # (name, marker) of each: the base install is aiohttp; Celery only with the extra.
    names = [
        (re.split(r"[<>=!~;\s]", requirement, maxsplit=1)[0], requirement.partition(";")[2].strip())
        for requirement in answer["requires"]
    ]
    assert names == [("aiohttp", ""), ("celery", 'extra == "celery"')], answer["requires"]
    assert answer["present"] == []


def test_its_command_runs_and_watches_a_job_of_the_real_stack(
    client_venv: Path, progress_url: str, tmp_path: Path
) -> None:
    command = str(client_venv / "bin" / "jobprogress")
    usage = in_venv(client_venv, command, "--help")
    assert usage.returncode == 0 and "usage: jobprogress" in usage.stdout, usage.stderr

    env = {"JOBPROGRESS_URL": progress_url, "XDG_CONFIG_HOME": str(tmp_path)}
    submitted = in_venv(client_venv, command, "submit", "--steps", "2", "--duration", "0.4", **env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    watched = in_venv(client_venv, command, "watch", job_id, **env)
    assert watched.returncode == 0, watched.stderr
    assert "100%  COMPLETED" in watched.stdout and "COMPLETED: " in watched.stdout
