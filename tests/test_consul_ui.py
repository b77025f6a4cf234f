"""scripts/screenshot-consul-ui: a real stack, the real agent's UI in headless Chromium, PNGs
of the services list and of the worker's instances, and nothing left running."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "screenshot-consul-ui"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first in a PNG."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, chunk = struct.unpack(">I4s", header[8:16])
    assert (length, chunk) == (13, b"IHDR")
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def run_script(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the script; past ``timeout``, SIGTERM it so that it stops what it started (its
    processes are in sessions of their own: killing the script would leave them running)."""
    with subprocess.Popen(
        [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                out, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            pytest.fail(f"the script took over {timeout:g}s:\n{out}{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_screenshot_shows_the_three_services_passing(tmp_path: Path) -> None:
    services, workers = tmp_path / "services.png", tmp_path / "worker.png"
    result = run_script("--output", str(services), "--worker-output", str(workers), "--viewport", "1024x640")
    assert result.returncode == 0, result.stdout + result.stderr

    lines = result.stdout.splitlines()
    assert "consul: worker-service: 2 passing, checks: http, ttl" in lines
    assert "ui: job-queue-service passing, 1 Instance" in lines
    assert "ui: worker-service passing, 2 Instances" in lines
    assert "ui: progress-service passing, 1 Instance" in lines
    assert "ui: worker-service instances: 2 passing" in lines
    assert f"wrote {services}" in lines
    assert f"wrote {workers}" in lines

    assert png_size(services) == (1024, 640)
    assert png_size(workers) == (1024, 640)
    assert services.stat().st_size > 10_000  # a rendered page, not a blank one

    # Everything it started is stopped: its Consul agent no longer answers.
    match = re.search(r"^consul agent -dev: http://127\.0\.0\.1:(\d+)/ui/$", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=2).close()


def test_a_bad_argument_fails_before_starting_anything(tmp_path: Path) -> None:
    result = run_script("--output", str(tmp_path / "x.png"), "--viewport", "wide", timeout=30)
    assert result.returncode == 2
    assert "--viewport" in result.stderr
    assert not (tmp_path / "x.png").exists()
