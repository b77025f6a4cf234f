"""``scripts/run`` owns its processes: however the runner ends (Ctrl-C, SIGTERM, SIGHUP, its
stdout gone, even SIGKILL), everything it started stops, and the job that was running is
handed back to the queue within the worker's grace. A second run says so and starts nothing.

The runner's output goes through ``tee``, as in ``scripts/run | tee run.log``; every process
of one run is found by the run folder in its environment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from jobprogress_client import submit_job
from jobprogress_core.keys import Keys
from jobprogress_core.model import JobStatus
from jobprogress_core.redis import create_redis
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import TEST_ENV, RedisServer, eventually, free_port, http_get

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
READY = "Ctrl-C stops everything."


def processes_of(run_dir: Path) -> list[int]:
    """Every live process whose environment names ``run_dir`` (the runner and all it started)."""
    marker = f"JOBPROGRESS_RUN_DIR={run_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class Run:
    runner: subprocess.Popen[bytes]
    tee: subprocess.Popen[bytes]
    run_dir: Path
    log: Path
    env: dict[str, str]

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, variable: str) -> str:
        return f"http://127.0.0.1:{self.env[variable]}"


@pytest.fixture
def start_run(tmp_path: Path, jobprogress_redis: RedisServer) -> Iterator[Callable[..., Run]]:
    """``scripts/run`` with its own Consul agent, service ports and run folder, on the test
    Redis (which answers, so the run uses it and leaves it running: the test reads the jobs
    there afterwards), under a key prefix of its own."""
    runs: list[Run] = []

    def start(name: str = "run", *args: str, **env: str) -> Run:
        run_dir = tmp_path / name
        environ = {
            **os.environ,
            **TEST_ENV,
            "JOBPROGRESS_RUN_DIR": str(run_dir),
            "REDIS_URL": jobprogress_redis.url,
            "JOBPROGRESS_KEY_PREFIX": f"{tmp_path.name}-{name}:",
            "CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "JOB_QUEUE_SERVICE_PORT": str(free_port()),
            "WORKER_SERVICE_PORT": str(free_port()),
            "PROGRESS_SERVICE_PORT": str(free_port()),
            "JOBPROGRESS_GRACE_SECONDS": "1",
            **env,
        }
        log = tmp_path / f"{name}-{len(runs)}.log"  # a second start in the same folder has its own
        log.touch()  # read before tee may have opened it
        tee = subprocess.Popen(["tee", str(log)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert tee.stdin is not None
        # A session of its own, as a terminal's foreground job: Ctrl-C is a SIGINT to its group.
        runner = subprocess.Popen(
            [str(ROOT / "scripts/run"), *args],
            cwd=ROOT,
            env=environ,
            stdout=tee.stdin,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        tee.stdin.close()
        run = Run(runner, tee, run_dir, log, environ)
        runs.append(run)
        return run

    yield start
    for run in runs:
        for pid in [run.runner.pid, *processes_of(run.run_dir)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.runner.wait()
        run.tee.kill()
        run.tee.wait()


async def ready(run: Run) -> None:
    try:
        await eventually(lambda: READY in run.output, "the run printing its addresses", timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noutput:\n{run.output[-4000:]}") from None


async def running_job(http: aiohttp.ClientSession, run: Run, store: JobStore) -> str:
    job_id = await submit_job(http, run.url("JOB_QUEUE_SERVICE_PORT"), steps=60, durationSeconds=60)

    async def processing() -> bool:
        job = await store.get(job_id)
        return job is not None and job.status is JobStatus.PROCESSING

    await eventually(processing, "the job running", timeout=30)
    return job_id


@pytest.fixture
async def store_of() -> AsyncIterator[Callable[[Run], JobStore]]:
    """The jobs of a run, in the Redis it used."""
    clients = []

    def make(run: Run) -> JobStore:
        settings = Settings.from_env("job-queue-service", run.env)
        redis = create_redis(settings)
        clients.append(redis)
        return JobStore(redis, Keys(settings.key_prefix, settings.partitions))

    yield make
    for redis in clients:
        await redis.aclose()


def ctrl_c(run: Run) -> None:
    os.killpg(run.runner.pid, signal.SIGINT)


def ctrl_c_with_tee_gone_first(run: Run) -> None:
    run.tee.kill()
    run.tee.wait()
    os.killpg(run.runner.pid, signal.SIGINT)


def sigterm(run: Run) -> None:
    run.runner.send_signal(signal.SIGTERM)


def sighup(run: Run) -> None:  # the terminal was closed
    run.runner.send_signal(signal.SIGHUP)


def stdout_gone(run: Run) -> None:
    run.tee.kill()


def sigkill(run: Run) -> None:
    run.runner.kill()


ENDINGS = {
    ctrl_c: 0,
    ctrl_c_with_tee_gone_first: 1,
    sigterm: 0,
    sighup: 0,
    stdout_gone: 1,
    sigkill: -signal.SIGKILL,
}


@pytest.mark.parametrize("end", list(ENDINGS), ids=lambda end: end.__name__)
async def test_every_ending_of_the_runner_stops_everything_and_hands_the_running_job_back(
    start_run: Callable[..., Run],
    store_of: Callable[[Run], JobStore],
    http: aiohttp.ClientSession,
    end: Callable[[Run], None],
) -> None:
    run = start_run()
    await ready(run)
    store = store_of(run)
    started = processes_of(run.run_dir)
    assert len(started) >= 5, started  # runner, supervisor, consul, three services
    job_id = await running_job(http, run, store)

    end(run)
    await eventually(lambda: not processes_of(run.run_dir), "every process of the run gone", timeout=60)
    assert run.runner.wait(10) == ENDINGS[end]

    job = await store.get(job_id)
    assert job is not None
    journal = (run.run_dir / "supervisor.log").read_text()
    rest = run.run_dir / "DEBUG-rest.log"
    journal += rest.read_text() if rest.exists() else ""
    # Handed back: the next worker continues it at once.
    assert job.status is JobStatus.QUEUED, f"{job}\nsupervisor:\n{journal}\noutput:\n{run.output[-3000:]}"
    assert "Handed back" in job.message and job.attempts == 0
    if end in (ctrl_c, sigterm, sighup):  # the output still had somewhere to go
        assert "1 handed back" in run.output and "\nstopped (" in run.output


async def second_run(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    command = [str(ROOT / "scripts/run")]
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, timeout=60
    )


async def test_a_second_run_says_so_in_one_line_and_starts_nothing(
    start_run: Callable[..., Run], http: aiohttp.ClientSession
) -> None:
    first = start_run()
    await ready(first)
    page = f"{first.url('PROGRESS_SERVICE_PORT')}/client/index.html"

    same_folder = await second_run(first.env)
    assert same_folder.returncode == 1
    assert same_folder.stdout == b""
    (line,) = same_folder.stderr.decode().splitlines()
    assert line.startswith(f"scripts/run is already running from {first.run_dir} (pid ")

    elsewhere = first.run_dir.with_name("other")
    same_ports = await second_run({**first.env, "JOBPROGRESS_RUN_DIR": str(elsewhere)})
    assert same_ports.returncode == 1
    (line,) = same_ports.stderr.decode().splitlines()
    port = first.env["JOB_QUEUE_SERVICE_PORT"]
    assert (
        line == f"port {port} (job-queue-service) is in use: stop what uses it, or set JOB_QUEUE_SERVICE_PORT"
    )
    assert not processes_of(elsewhere)  # nothing half-started

    assert http_get(page)[0] == 200  # the first run is untouched
    assert READY in first.output and "stopping" not in first.output


async def test_ctrl_c_twice_stops_everything_at_once(
    start_run: Callable[..., Run], store_of: Callable[[Run], JobStore], http: aiohttp.ClientSession
) -> None:
    run = start_run(JOBPROGRESS_GRACE_SECONDS="600")  # a stop in order would take ten minutes
    await ready(run)
    store = store_of(run)
    job_id = await running_job(http, run, store)
    ctrl_c(run)
    await eventually(lambda: "Ctrl-C again stops everything at once" in run.output, "the stop under way")
    ctrl_c(run)
    await eventually(lambda: not processes_of(run.run_dir), "every process of the run gone", timeout=30)
    assert run.runner.wait(10) == 0
    assert "stopping at once" in run.output and "worker-service -9" in run.output
    job = await store.get(job_id)
    assert job is not None and job.status is JobStatus.PROCESSING  # not handed back: reclaimed later


async def test_a_process_that_dies_stops_the_run(start_run: Callable[..., Run]) -> None:
    run = start_run()
    await ready(run)
    (progress,) = [pid for pid in processes_of(run.run_dir) if b"progress_service" in cmdline(pid)]
    os.kill(progress, signal.SIGKILL)
    await eventually(lambda: not processes_of(run.run_dir), "every process of the run gone", timeout=60)
    assert run.runner.wait(10) == 1
    assert f"progress-service (pid {progress}) exited (-9): stopping everything" in run.output


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


async def test_a_job_running_at_ctrl_c_goes_on_at_the_next_run_with_its_own_redis(
    start_run: Callable[..., Run], store_of: Callable[[Run], JobStore], http: aiohttp.ClientSession
) -> None:
    """Without a Redis to reuse, the run starts one that keeps its data in the run folder."""
    own = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    first = start_run(**own)
    await ready(first)
    assert "starting redis-server" in first.output
    queue = first.url("JOB_QUEUE_SERVICE_PORT")
    job_id = await submit_job(http, queue, steps=3, durationSeconds=6)

    def job_is(check: Callable[[dict[str, Any]], bool]) -> Callable[[], Awaitable[bool]]:
        async def state() -> bool:
            async with http.get(f"{queue}/api/jobs/{job_id}") as response:
                return response.status == 200 and check(await response.json())

        return state

    await eventually(job_is(lambda job: job["step"] == 1), "the job past its first step")
    ctrl_c(first)
    await eventually(lambda: not processes_of(first.run_dir), "the first run gone", timeout=60)

    ports = {name: value for name, value in first.env.items() if name.endswith("_SERVICE_PORT")}
    second = start_run(**own, **ports)  # the same folder, so the same Redis data
    await ready(second)
    await eventually(job_is(lambda job: job["status"] == "COMPLETED"), "the job completed", timeout=60)
    texts = [
        str(event.data.get("message") or event.data.get("line"))
        for event in await store_of(second).events(job_id)
    ]
    assert any("Handed back" in text for text in texts), texts
    assert any("Resuming after step 1/3" in text for text in texts), texts


async def test_with_redis_cluster_the_run_starts_a_new_cluster_and_stops_it_with_the_rest(
    start_run: Callable[..., Run],
) -> None:
    """``scripts/run --redis-cluster``: a local Redis Cluster of its own instead of the Redis
    at ``REDIS_URL`` (which answers here), its URL given to the services, its six nodes
    stopped with the rest. Until the services read ``redis+cluster://`` URLs they refuse it,
    and the run stops by itself; either way SIGTERM leaves nothing running."""
    run = start_run("cluster", "--redis-cluster")
    await eventually(lambda: "Redis Cluster ready: REDIS_URL=" in run.output, "the cluster ready", timeout=60)
    found = re.search(r"REDIS_URL=(\S+)", run.output)
    assert found is not None
    url = urlsplit(found.group(1))
    assert url.scheme == "redis+cluster" and len(url.netloc.split(",")) == 3
    sigterm(run)
    await eventually(lambda: not processes_of(run.run_dir), "every process of the run gone", timeout=60)
    assert run.runner.wait(10) in (0, 1)
    assert "using the Redis that answers" not in run.output
    (stopped,) = [line for line in run.output.splitlines() if line.startswith("stopped (")]
    assert len(re.findall(r"redis-server:\d+ 0\b", stopped)) == 6, stopped
