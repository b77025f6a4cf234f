"""Every benchmark runs: each script in ``bench/`` at a tiny size, as a user would start it,
finishes and prints its table, leaving nothing in the temporary folder. The commands in
``bench/README.md`` name only options the scripts have. Never a timing: only that it ran."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
#: Files that are not benchmarks: what a benchmark runs (and its requirements), the nchan installer.
HELPERS = {"arq_app.py", "bare_app.py", "requirements-arq.txt", "setup-nchan"}

TINY = {
    # --before names this checkout itself: an earlier revision is run the same way.
    "submit.py": [
        "--requests", "60", "--concurrency", "5", "--rounds", "1", "--redis-cluster", "--before", ".",
    ],
    "streams.py": ["--streams", "20", "--jobs", "2", "--events", "3"],
    "multiplex.py": ["--jobs", "3", "--clients", "2", "--rate", "5", "--seconds", "1", "--rounds", "1"],
    "run.py": ["--lines", "500", "--rounds", "1"],
    "failover.py": ["--rounds", "1", "--seconds", "0.4", "--lag-ms", "50"],
    "fanout.py": [
        "--clients", "40", "--channels", "2", "--latency-clients", "4", "8", "--latency-rates", "5", "5",
        "--seconds", "1.5", "--rounds", "1", "--max-clients", "8", "--max-seconds", "0.5", "--redis-cluster",
        "--storm", "30", "--storm-events", "2",
    ],
}  # fmt: skip

#: What each prints once it has measured everything.
TABLES = {
    "submit.py": [
        r"^\| server \| requests/s .* \| server CPU µs / request \| Redis CPU µs / request \|$",
        r"^\| job-queue-service \| [\d,]+ \| [\d.]+ \| [\d.]+ \| \d+ \| [\d,]+ \| [\d,]+ \|$",
        r"^\| aiohttp \+ arq enqueue_job \| [\d,]+ \| [\d.]+ \| [\d.]+ \| - \|",
        r"^\| bare aiohttp handler \| [\d,]+ \| [\d.]+ \| [\d.]+ \| - \| [\d,]+ \| - \|$",
        r"^\| job-queue-service \(before\) \| [\d,]+ \| [\d.]+ \| [\d.]+ \| \d+ \|",
        r"^job-queue-service / arq, requests/s: [\d.]+$",
        r"^\| job-queue-service on Redis Cluster \(3 masters\) \| [\d,]+ \| [\d.]+ \| [\d.]+ \| \d+ \|",
    ],
    "streams.py": [r"^clients with every event, exactly once: 20 of 20$"],
    "multiplex.py": [
        r"^\| single \| 6 \| [\d,]+ of [\d,]+ \|",
        r"^\| multiplexed \| 2 \| [\d,]+ of [\d,]+ \|",
        r"^CPU per event, multiplexed / single: ([\d.]+|n/a)$",
        r"^compound ID of a 3-job stream: median \d+, max \d+ characters",
    ],
    "run.py": [r"^every line once, in order: 1 of 1 runs$", r"^\| jobprogress run \| 500 \| [\d.]+ \|"],
    "failover.py": [
        r"^\| keeping up \| no WAIT \| [\d,]+ \| \d+ \| - \|",
        r"^\| stopped 50 ms before \| WAIT 1 \(100 ms\) \| [\d,]+ \| \d+ \| \d+ \|",
    ],
    "fanout.py": [
        r"^\| metric \| progress-service \| progress-service \(Redis Cluster\) \| nchan \| progress / nchan "
        r"\| cluster / one Redis \|$",
        r"^\| connect 40 clients \(s\) \| [\d.]+ \| [\d.]+ \|",
        r"^\| storm of 30 clients at once: time to all connected \(s\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \|",
        r"^\| storm of 30 clients at once: RSS per stream \(KiB\) \| n/a \|",
        r"^\| storm of 30 clients at once: server CPU per connect \(ms\) \| [\d.]+ \|",
        # every client of every server got each of the 3 events once, none refused
        r"^\| storm of 30 clients at once: clients with all 3 events exactly once "
        r"\| 30 \| 30 \| 30 \| 1.00 \|",
        r"^\| storm of 30 clients at once: clients refused or failed \| 0 \| 0 \| 0 \|",
        r"^\| 8 clients x 5 ev/s: latency p99 \(ms\) \| [\d.]+ \| [\d.]+ \|",
        r"^\| max rate, 8 clients on 1 channel: delivered events/s \| [\d,]+ \|",
    ],
}


def test_every_benchmark_has_a_tiny_run() -> None:
    scripts = {path.name for path in BENCH.iterdir() if path.is_file() and path.name != "README.md"}
    assert scripts - HELPERS == set(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_a_benchmark_runs_at_a_tiny_size_and_prints_its_table(script: str, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *TINY[script]],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for pattern in TABLES[script]:
        assert re.search(pattern, done.stdout, re.MULTILINE), (pattern, done.stdout)
    assert not list(scratch.iterdir())  # its stack's folder and the rest are gone


def readme_commands() -> list[tuple[str, list[str]]]:
    """``(script, options)`` of each benchmark command in ``bench/README.md``."""
    text = (BENCH / "README.md").read_text()
    found = re.findall(r"^\.venv/bin/python bench/(\w+\.py)([^#\n]*)", text, re.MULTILINE)
    return [(script, re.findall(r"--[\w-]+", options)) for script, options in found]


def test_the_readme_commands_name_options_the_scripts_have() -> None:
    commands = readme_commands()
    assert {script for script, _ in commands} == set(TINY)
    for script, options in commands:
        usage = subprocess.run(
            [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=30
        ).stdout
        for option in options:
            assert re.search(rf"\s{option}\b", usage), (script, option)
