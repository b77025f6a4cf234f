"""The ``jobprogress`` command, run as a subprocess against the real stack: submit, watch
(also across a restart of the progress service), status, list, and its exit codes; watch of
several jobs on one stream (``watch ID ID...``, ``watch --all``), also across a restart."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobprogress_client import collect_events
from jobprogress_testing import Stack, eventually, run_cli, start_cli

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


# Several jobs on one stream: `watch ID ID...` and `watch --all`.

HEAD = 8 + 2 + 16 + 2  # what begins each line of one job of several: its id's first 8, its name


class Watcher:
    """``jobprogress watch ...`` running, its stdout read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        self.process, self.lines = process, list[str]()
        self.reader = asyncio.create_task(self._read(process.stdout))

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            self.lines.append(line.decode())

    @property
    def out(self) -> str:
        return "".join(self.lines)

    async def end(self, timeout: float = 60) -> tuple[int, str, str]:
        """Its exit code, stdout and stderr, once it has exited (killed after ``timeout``)."""
        assert self.process.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                err = await self.process.stderr.read()
                code = await self.process.wait()
                await self.reader
        finally:
            if self.process.returncode is None:
                self.process.kill()
        return code, self.out, err.decode(errors="replace")


async def watcher(*args: str, config: Path, url: str) -> Watcher:
    return Watcher(await start_cli("watch", *args, config=config, url=url))


def lines_of(output: str, job_id: str) -> list[str]:
    """The lines a watch of several jobs printed of one job: its bars, final state and
    reset notes, without their head (the job's id and name)."""
    return [line[HEAD:] for line in output.splitlines() if line.startswith(job_id[:8])]


def finals_of(output: str, job_id: str) -> list[str]:
    return [
        line for line in lines_of(output, job_id) if line.startswith(("COMPLETED", "FAILED", "CANCELLED"))
    ]


def log_of(output: str, job_id: str) -> list[str]:
    """The log lines a watch of several jobs printed of one job, in order."""
    return [line[2 + HEAD :] for line in output.splitlines() if line.startswith(f"  {job_id[:8]}  ")]


async def submitted(*args: str, config: Path, url: str) -> str:
    code, out, err = await jobprogress("submit", *args, config=config, url=url)
    assert code == 0, err
    return out.splitlines()[0]


async def job_of(config: Path, url: str, job_id: str) -> dict[str, Any]:
    code, out, err = await jobprogress("status", job_id, "--json", config=config, url=url)
    assert code == 0, err
    job: dict[str, Any] = json.loads(out)
    return job


async def test_watch_of_several_jobs_shows_each_to_its_end_and_exits_as_the_worst(
    tmp_path: Path, progress_url: str
) -> None:
    quick = ("--steps", "2", "--duration", "0.4")
    done = await submitted("--name", "first", *quick, config=tmp_path, url=progress_url)
    also = await submitted("--name", "second", *quick, config=tmp_path, url=progress_url)
    code, out, err = await jobprogress("watch", done, also, config=tmp_path, url=progress_url)
    assert code == 0, err
    for job_id in (done, also):
        assert finals_of(out, job_id) == [
            "COMPLETED: " + (await job_of(tmp_path, progress_url, job_id))["result"]
        ]
        assert log_of(out, job_id) == await job_log(tmp_path, progress_url, job_id)  # each once, in order
        assert "100%  COMPLETED  step 2/2" in lines_of(out, job_id)[-2]
    for job_id, name in ((done, "first"), (also, "second")):  # each line headed by its job
        headed = [line.lstrip() for line in out.splitlines() if line.lstrip().startswith(job_id[:8])]
        assert headed and all(line.startswith(f"{job_id[:8]}  {name:<16}  ") for line in headed)

    # Failed is worse than cancelled, which is worse than completed.
    broken = await submitted(
        "--steps", "2", "--duration", "0.4", "--fail-at-step", "1", config=tmp_path, url=progress_url
    )
    long = await submitted("--steps", "4", "--duration", "600", config=tmp_path, url=progress_url)
    watch = await watcher(done, broken, long, config=tmp_path, url=progress_url)
    await eventually(lambda: finals_of(watch.out, broken) and lines_of(watch.out, long), "both shown")
    await cancel(tmp_path, progress_url, long)
    code, out, err = await watch.end()
    assert code == 1, (out, err)
    assert [finals_of(out, job_id)[0].split(":")[0] for job_id in (done, broken, long)] == [
        "COMPLETED", "FAILED", "CANCELLED"
    ]  # fmt: skip
    assert all(len(finals_of(out, job_id)) == 1 for job_id in (done, broken, long))
    code, out, _ = await jobprogress("watch", long, done, config=tmp_path, url=progress_url)
    assert code == 3 and finals_of(out, long) == ["CANCELLED"]  # ended already: their logs replayed

    code, _, err = await jobprogress("watch", done, "0" * 32, config=tmp_path, url=progress_url)
    assert code == 4 and "HTTP 404" in err and "0" * 32 in err


async def test_watch_all_follows_running_jobs_and_those_submitted_meanwhile_until_ctrl_c(
    tmp_path: Path, progress_url: str
) -> None:
    old = await submitted("--steps", "1", "--duration", "0.2", "--watch", config=tmp_path, url=progress_url)
    running = await submitted(
        "--name", "running", "--steps", "4", "--duration", "600", config=tmp_path, url=progress_url
    )
    watch = await watcher("--all", config=tmp_path, url=progress_url)
    await eventually(lambda: lines_of(watch.out, running), "the running job shown")
    later = await submitted(
        "--name", "later", "--steps", "2", "--duration", "0.4", config=tmp_path, url=progress_url
    )
    await eventually(lambda: finals_of(watch.out, later), "the job submitted meanwhile, to its end")
    await cancel(tmp_path, progress_url, running)
    await eventually(lambda: finals_of(watch.out, running), "the running job's end")
    watch.process.send_signal(signal.SIGINT)
    code, out, err = await watch.end()
    assert (code, err) == (130, "")
    assert lines_of(out, old) == []  # it had ended before
    assert finals_of(out, later) == ["COMPLETED: " + (await job_of(tmp_path, progress_url, later))["result"]]
    assert lines_of(out, later)[0].startswith(f"[{'.' * 30}]   0%  QUEUED")  # from its first event
    assert log_of(out, later) == await job_log(tmp_path, progress_url, later)
    assert finals_of(out, running) == ["CANCELLED"]


@pytest.mark.parametrize("form", ["ids", "all"])
async def test_watch_of_several_jobs_resumes_each_after_the_service_drops_without_loss_or_repeat(
    tmp_path: Path, jobprogress_stack: Stack, form: str
) -> None:
    progress = jobprogress_stack.start_service("progress-service")
    port, url = progress.port, progress.url
    job_ids = [await submitted("--steps", "6", "--duration", "6", config=tmp_path, url=url) for _ in range(2)]
    watch = await watcher(*(job_ids if form == "ids" else ["--all"]), config=tmp_path, url=url)
    await eventually(
        lambda: watch.process.returncode is not None or watched_mid_job(tmp_path, url, job_ids[0]),
        "the watch under way",
        timeout=30,
    )
    progress.stop()  # the stream drops mid-job
    await eventually(lambda: "reconnecting" in watch.out, "the watch noticing the drop", timeout=30)
    replacement = jobprogress_stack.start_service("progress-service", port=port)
    try:
        if form == "all":  # it runs until interrupted
            await eventually(
                lambda: all(finals_of(watch.out, job_id) for job_id in job_ids), "both ends", timeout=60
            )
            watch.process.send_signal(signal.SIGINT)
        code, out, err = await watch.end(timeout=90)
        assert code == (0 if form == "ids" else 130), (out, err)
        for job_id in job_ids:  # across the drop: every line of each job's log, once, in order
            assert log_of(out, job_id) == await job_log(tmp_path, url, job_id)
            assert len(finals_of(out, job_id)) == 1
    finally:
        replacement.stop()
