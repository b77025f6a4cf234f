"""``jobprogress run -- CMD``: real commands as external jobs, watched through the real stack."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobprogress_client import ReceivedEvent, collect_events
from jobprogress_testing import Stack, run_cli, start_cli

pytestmark = pytest.mark.stack


async def start(*args: str, config: Path, url: str) -> asyncio.subprocess.Process:
    return await start_cli("run", *args, config=config, url=url)


async def run(*args: str, config: Path, url: str, timeout: float = 90) -> tuple[int, str, str]:
    return await run_cli("run", *args, config=config, url=url, timeout=timeout)


def job_id_of(err: str) -> str:
    for line in err.splitlines():
        if line.startswith("jobprogress: job ") and "watch it at" in line:
            return line.split()[2].rstrip(",")
    raise AssertionError(f"no job id in: {err!r}")


def token_of(config: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(config / 'jobprogress' / 'token').read_text().strip()}"}


async def events_of(config: Path, url: str, job_id: str) -> list[ReceivedEvent]:
    async with aiohttp.ClientSession(headers=token_of(config)) as http:
        return await collect_events(http, f"{url}/api/progress/{job_id}", timeout=60)


async def job_of(config: Path, url: str, job_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(headers=token_of(config)) as http,
        http.get(f"{url}/api/jobs/{job_id}") as response,
    ):
        assert response.status == 200
        job: dict[str, Any] = await response.json()
        return job


def logged(events: list[ReceivedEvent]) -> list[tuple[str, str]]:
    return [(e.data["line"], e.data["level"]) for e in events if e.event == "log"]


async def test_output_lines_become_the_jobs_log_and_progress(tmp_path: Path, progress_url: str) -> None:
    script = 'echo one; echo two >&2; echo "::progress 1/2 half way"; echo three; printf "no newline"'
    code, out, err = await run("--name", "lines", "--", "sh", "-c", script, config=tmp_path, url=progress_url)
    assert code == 0, err
    assert out == "one\n::progress 1/2 half way\nthree\nno newline"  # passed on as it is
    assert "two" in err and "/client/index.html?job=" in err
    job_id = job_id_of(err)
    events = await events_of(tmp_path, progress_url, job_id)
    # Each stream keeps its order; between the two pipes the order is the order of reading.
    assert [line for line, level in logged(events) if level == "info"] == ["one", "three", "no newline"]
    assert [line for line, level in logged(events) if level == "error"] == ["two"]
    progress = [e.data for e in events if e.event == "progress"]
    assert [(p["step"], p["totalSteps"], p["message"]) for p in progress] == [(1, 2, "half way")]
    assert events[-1].event == "complete"
    job = await job_of(tmp_path, progress_url, job_id)
    assert (job["status"], job["name"]) == ("COMPLETED", "lines")


async def test_the_exit_status_ends_the_job_and_is_the_commands(tmp_path: Path, progress_url: str) -> None:
    code, _, err = await run("--", "sh", "-c", "echo bad >&2; exit 3", config=tmp_path, url=progress_url)
    assert code == 3
    job = await job_of(tmp_path, progress_url, job_id_of(err))
    assert (job["status"], job["error"]) == ("FAILED", "exit status 3")

    code, _, err = await run("--", "sh", "-c", "echo going; kill -9 $$", config=tmp_path, url=progress_url)
    assert code == 128 + 9
    job = await job_of(tmp_path, progress_url, job_id_of(err))
    assert (job["status"], job["error"]) == ("FAILED", "killed by SIGKILL")

    code, _, err = await run("--", "no-such-command-here", config=tmp_path, url=progress_url)
    assert code == 127 and "cannot run" in err


async def test_binary_garbage_arrives_as_replaced_text(tmp_path: Path, progress_url: str) -> None:
    garbage = "import sys; sys.stdout.buffer.write(bytes([0xff, 0xfe, 0, 97, 10, 0x80, 98]))"
    code, _, err = await run("--", sys.executable, "-c", garbage, config=tmp_path, url=progress_url)
    assert code == 0, err
    events = await events_of(tmp_path, progress_url, job_id_of(err))
    assert logged(events) == [("\ufffd\ufffd\x00a", "info"), ("\ufffdb", "info")]


async def test_many_lines_arrive_whole_and_in_order_in_few_requests(
    jobprogress_make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = jobprogress_make_stack(JOBPROGRESS_EVENT_STREAM_MAXLEN="100000")
    url = stack.url("progress-service")
    count = 20_000
    printer = f"for n in range({count}): print(n)"
    code, _, err = await run("--", sys.executable, "-c", printer, config=tmp_path, url=url, timeout=110)
    assert code == 0, err
    events = await events_of(tmp_path, url, job_id_of(err))
    assert [line for line, _ in logged(events)] == [str(n) for n in range(count)]
    requests = int(err.split(" in ")[-1].split()[0])
    assert requests < count / 100, err  # batched, not a request per line


async def test_a_cancel_from_the_api_stops_the_command(tmp_path: Path, progress_url: str) -> None:
    process = await start(
        "--", "sh", "-c", "while true; do echo tick; sleep 0.1; done", config=tmp_path, url=progress_url
    )
    assert process.stderr is not None
    first = (await process.stderr.readline()).decode()
    job_id = job_id_of(first)

    assert process.stdout is not None
    assert (await process.stdout.readline()) == b"tick\n"  # the command runs
    async with (
        aiohttp.ClientSession(headers=token_of(tmp_path)) as http,
        http.post(f"{progress_url}/api/jobs/{job_id}/cancel") as response,
    ):
        assert response.status == 202
    async with asyncio.timeout(60):
        code = await process.wait()
    assert code == 128 + signal.SIGTERM
    job = await job_of(tmp_path, progress_url, job_id)
    assert job["status"] == "CANCELLED"


async def test_ctrl_c_ends_the_job_cancelled(tmp_path: Path, progress_url: str) -> None:
    process = await start("--", "sh", "-c", "echo started; sleep 60", config=tmp_path, url=progress_url)
    assert process.stderr is not None and process.stdout is not None
    job_id = job_id_of((await process.stderr.readline()).decode())
    assert (await process.stdout.readline()) == b"started\n"
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(60):
        code = await process.wait()
    assert code == 130
    job = await job_of(tmp_path, progress_url, job_id)
    assert (job["status"], job["error"]) == ("CANCELLED", "Interrupted (Ctrl-C)")
