"""The ``jobprogress`` command, run as a subprocess against the real stack: submit, watch
(also across a restart of the progress service), status, list, and its exit codes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobprogress_client import collect_events
from jobprogress_testing import Stack, eventually, run_cli

pytestmark = pytest.mark.stack

jobprogress = run_cli  # as a user runs it: its exit code, stdout and stderr


def printed_log(output: str) -> list[str]:
    """The log lines ``watch`` printed (indented by two spaces, unlike its other lines)."""
    return [line[2:] for line in output.splitlines() if line.startswith("  ") and not line.startswith("   ")]


STREAMS_OPEN = "jobprogress_sse_streams_active"


async def watched_mid_job(config: Path, url: str, job_id: str) -> bool:
    """Whether the progress-service instance at ``url`` (a watcher's own) serves a stream, and
    the job has done a step: a ``watch`` connected to it is under way."""
    token = (config / "jobprogress" / "token").read_text().strip()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(f"{url}/metrics") as response:
            families = text_string_to_metric_families(await response.text())
            streams = [
                sample.value
                for family in families
                for sample in family.samples
                if family.name == STREAMS_OPEN
            ]
        async with http.get(f"{url}/api/jobs/{job_id}") as response:
            step = (await response.json())["step"]
    return streams == [1] and step >= 1


async def job_log(config: Path, url: str, job_id: str) -> list[str]:
    """The job's log lines as the stream replays them, formatted as ``watch`` prints them."""
    token = (config / "jobprogress" / "token").read_text().strip()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        events = await collect_events(http, f"{url}/api/progress/{job_id}", timeout=30)
    return [
        (
            e.data["line"]
            if e.data.get("level", "info") == "info"
            else f"{e.data['level'].upper()}: {e.data['line']}"
        )
        for e in events
        if e.event == "log"
    ]


async def test_submit_status_and_list_as_one_identity(tmp_path: Path, progress_url: str) -> None:
    code, out, err = await jobprogress(
        "submit", "--type", "report", "--name", "Q3 numbers", "--steps", "2", "--duration", "0.3",
        config=tmp_path, url=progress_url,
    )  # fmt: skip
    assert code == 0, err
    job_id, *links = out.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert links[0].split() == ["page:", f"{progress_url}/client/index.html?job={job_id}"]
    assert links[2].split() == ["progress:", f"{progress_url}/api/progress/{job_id}"]
    token = (tmp_path / "jobprogress" / "token").stat()
    assert token.st_mode & 0o777 == 0o600  # kept for the next command, for this user only

    code, out, _ = await jobprogress("status", job_id, "--json", config=tmp_path, url=progress_url)
    assert code == 0 and json.loads(out)["name"] == "Q3 numbers"
    code, out, _ = await jobprogress("list", config=tmp_path, url=progress_url)
    assert code == 0 and out.split()[0] == job_id and "Q3 numbers" in out

    # Another user (another config) sees none of it.
    other = tmp_path / "other"
    code, out, _ = await jobprogress("list", config=other, url=progress_url)
    assert (code, out) == (0, "")
    code, _, err = await jobprogress("status", job_id, config=other, url=progress_url)
    assert code == 4 and "HTTP 404" in err


async def test_submit_watch_shows_the_bar_and_every_log_line_once(tmp_path: Path, progress_url: str) -> None:
    code, out, err = await jobprogress(
        "submit", "--steps", "3", "--duration", "0.6", "--watch", config=tmp_path, url=progress_url
    )
    assert code == 0, err
    assert "100%  COMPLETED" in out and "COMPLETED: " in out
    job_id = out.splitlines()[0]
    expected = await job_log(tmp_path, progress_url, job_id)
    watched = "\n".join(out.splitlines()[4:])  # after the id and the three links
    assert expected and printed_log(watched) == expected  # each once, in order


async def test_watch_exit_codes_follow_the_final_status(tmp_path: Path, progress_url: str) -> None:
    code, out, _ = await jobprogress(
        "submit", "--steps", "2", "--duration", "0.2", "--fail-at-step", "1", "--watch",
        config=tmp_path, url=progress_url,
    )  # fmt: skip
    assert code == 1 and "FAILED: " in out
    code, out, _ = await jobprogress(
        "submit", "--steps", "4", "--duration", "600", config=tmp_path, url=progress_url
    )
    job_id = out.splitlines()[0]
    watcher = asyncio.create_task(jobprogress("watch", job_id, config=tmp_path, url=progress_url))
    await asyncio.sleep(1.5)
    await cancel(tmp_path, progress_url, job_id)
    code, out, _ = await watcher
    assert code == 3 and "CANCELLED" in out
    code, _, err = await jobprogress("watch", "0" * 32, config=tmp_path, url=progress_url)
    assert code == 4 and "404" in err
    code, _, err = await jobprogress("list", config=tmp_path, url="http://127.0.0.1:1")
    assert code == 4 and "cannot reach" in err


async def cancel(config: Path, url: str, job_id: str) -> None:
    token = (config / "jobprogress" / "token").read_text().strip()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/api/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert response.status in (200, 202)


async def test_watch_resumes_after_the_service_drops_without_loss_or_repeat(
    tmp_path: Path, jobprogress_stack: Stack
) -> None:
    progress = jobprogress_stack.start_service("progress-service")
    port, url = progress.port, progress.url
    code, out, err = await jobprogress("submit", "--steps", "6", "--duration", "6", config=tmp_path, url=url)
    assert code == 0, err
    job_id = out.splitlines()[0]
    watcher = asyncio.create_task(jobprogress("watch", job_id, config=tmp_path, url=url, timeout=90))
    await eventually(
        lambda: watcher.done() or watched_mid_job(tmp_path, url, job_id), "the watch under way", timeout=30
    )
    progress.stop()  # the stream drops mid-job
    await asyncio.sleep(1.0)
    replacement = jobprogress_stack.start_service("progress-service", port=port)
    try:
        code, out, err = await watcher
        assert code == 0, (out, err)
        assert "reconnecting" in out
        # Across the drop: every line of the job's log, once, in order.
        assert printed_log(out) == await job_log(tmp_path, url, job_id)
    finally:
        replacement.stop()


async def test_status_shows_every_field_the_service_gives(tmp_path: Path, progress_url: str) -> None:
    code, out, err = await jobprogress(
        "submit",
        "--name",
        "fields",
        "--steps",
        "1",
        "--duration",
        "0.2",
        "--watch",
        config=tmp_path,
        url=progress_url,
    )
    assert code == 0, err
    job_id = out.splitlines()[0]
    code, out, _ = await jobprogress("status", job_id, "--json", config=tmp_path, url=progress_url)
    job = json.loads(out)
    code, out, _ = await jobprogress("status", job_id, config=tmp_path, url=progress_url)
    shown = dict(line.strip().split(": ", 1) for line in out.splitlines())
    expected = {
        key: str(value) for key, value in job.items() if value is not None and not isinstance(value, dict)
    }
    assert code == 0 and shown == expected
    assert shown["name"] == "fields" and shown["status"] == "COMPLETED"
