"""deploy/nginx.conf: the reverse proxy in front of the progress service, with buffering
off for SSE. Checked statically, then run for real (Debian's nginx, installed by
scripts/bootstrap) in front of the stack's progress service.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from jobprogress_client import SseMessage, collect_events, read_messages
from jobprogress_core.model import EventType
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import Process, Stack, free_port, http_get

REPO = Path(__file__).resolve().parents[1]
NGINX_CONF = REPO / "deploy/nginx.conf"
SSE_PATH = "/api/progress/"
#: How long an event may take to come through before the test calls it held back.
EVENT_WAIT = 15.0


# --- the reverse proxy -----------------------------------------------------------------


def nginx_directives(block: str) -> dict[str, list[list[str]]]:
    """Directive name -> the arguments of each of its occurrences, in a block without nested blocks."""
    text = re.sub(r"#[^\n]*", "", block)
    directives: dict[str, list[list[str]]] = {}
    for statement in text.split(";"):
        words = shlex.split(statement)
        if words:
            directives.setdefault(words[0], []).append(words[1:])
    return directives


def nginx_location(prefix: str) -> dict[str, list[list[str]]]:
    found = re.search(rf"location\s+{re.escape(prefix)}\s*\{{([^{{}}]*)\}}", NGINX_CONF.read_text())
    assert found, f"deploy/nginx.conf has no `location {prefix}` block"
    return nginx_directives(found.group(1))


def nginx_seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parsed = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert parsed, f"{value!r} is not an nginx time"
    return int(parsed.group(1)) * units[parsed.group(2) or "s"]


def render_nginx_conf(upstream: str, port: int, resolver: str = "127.0.0.1") -> str:
    """deploy/nginx.conf with its placeholders filled, as the nginx image's envsubst does."""
    values = {"PROGRESS_SERVICE": upstream, "PROXY_PORT": str(port), "RESOLVER": resolver}
    rendered = NGINX_CONF.read_text()
    for name, value in values.items():
        rendered = rendered.replace(f"${{{name}}}", value)
    left = re.findall(r"\$\{\w+\}", rendered)
    assert not left, f"placeholders left in deploy/nginx.conf: {left}"
    return rendered


def test_nginx_conf_placeholders_are_the_upstream_and_the_listen_port() -> None:
    placeholders = set(re.findall(r"\$\{(\w+)\}", NGINX_CONF.read_text()))

    assert placeholders == {"PROGRESS_SERVICE", "PROXY_PORT", "RESOLVER"}, (
        f"placeholders are {sorted(placeholders)}"
    )
    rendered = render_nginx_conf("progress.example:1234", 4321, "10.0.0.53")
    assert re.search(r"^\s*listen 4321;", rendered, re.M), "the proxy does not listen on ${PROXY_PORT}"
    # The name is looked up at request time (a variable in proxy_pass), again every few seconds.
    assert re.search(r'^\s*set \$progress_service "progress.example:1234";', rendered, re.M), (
        "the upstream is not ${PROGRESS_SERVICE}"
    )
    resolver = re.search(r"^\s*resolver 10.0.0.53 valid=\d+s", rendered, re.M)
    assert resolver, "no resolver ${RESOLVER} with a TTL"
    passes = re.findall(r"^\s*proxy_pass ([^;]+);", rendered, re.M)
    assert passes and set(passes) == {"http://$progress_service"}, f"proxy_pass targets: {passes}"


@pytest.mark.parametrize(
    ("directive", "arguments"),
    [
        ("proxy_buffering", ["off"]),
        ("proxy_cache", ["off"]),
        ("gzip", ["off"]),
        ("proxy_http_version", ["1.1"]),
        ("proxy_set_header", ["Connection", ""]),
        ("proxy_set_header", ["Host", "$http_host"]),  # with the port: the same-origin rule compares it
        ("proxy_set_header", ["X-Forwarded-For", "$proxy_add_x_forwarded_for"]),
        ("proxy_set_header", ["X-Forwarded-Proto", "$scheme"]),
    ],
)
def test_sse_location_streams_unbuffered(directive: str, arguments: list[str]) -> None:
    location = nginx_location(SSE_PATH)

    assert arguments in location.get(directive, []), (
        f"`location {SSE_PATH}` lacks `{directive} {shlex.join(arguments)};` (has {location.get(directive)})"
    )


def test_sse_read_timeout_outlasts_the_heartbeat() -> None:
    heartbeat = Settings.from_env("progress-service", {"JOBPROGRESS_SECRET_KEY": "x"}).sse_heartbeat_seconds
    timeouts = nginx_location(SSE_PATH).get("proxy_read_timeout", [["60s"]])  # nginx's default

    assert nginx_seconds(timeouts[-1][0]) > 2 * heartbeat, (
        f"proxy_read_timeout {timeouts[-1][0]} would cut streams between {heartbeat}s heartbeats"
    )


#: The main configuration around deploy/nginx.conf (the nginx image has its own): every
#: path in the test's folder, nothing in the system's.
NGINX_MAIN_CONF = """\
{user}
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    # So that the test does not lean on the service's own `X-Accel-Buffering: no` (Debian's
    # nginx 1.22 passes small events on at once even when buffering, so the directive itself
    # is checked statically above).
    proxy_ignore_headers X-Accel-Buffering;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/jobprogress.conf;
}}
"""


@pytest.fixture(scope="module")
def proxy_url(jobprogress_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's nginx running deploy/nginx.conf in front of the stack's progress service."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).is_file():
        pytest.fail("no nginx: run scripts/bootstrap (it installs Debian's nginx-light)")
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    upstream = f"127.0.0.1:{jobprogress_stack.service('progress-service').port}"
    (prefix / "jobprogress.conf").write_text(render_nginx_conf(upstream, port))
    # Run as root, the workers would drop to `nobody`, who cannot enter the test's folders.
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(NGINX_MAIN_CONF.format(user=user, prefix=prefix))
    argv = [
        binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
        "-g", f"daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log;",
    ]  # fmt: skip
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, f"nginx -t rejects deploy/nginx.conf:\n{checked.stderr}"
    nginx = Process("nginx", argv, dict(os.environ), prefix / "nginx.out")
    nginx.start()
    try:
        url = f"http://127.0.0.1:{port}"
        nginx.wait_until(lambda: http_get(f"{url}/proxy-health")[0] == 200, 15, "answering")
        yield url
    finally:
        nginx.stop()


async def next_event(messages: AsyncIterator[SseMessage], what: str) -> SseMessage:
    """The next event of a stream (``retry`` and comments skipped)."""
    try:
        async with asyncio.timeout(EVENT_WAIT):
            while (message := await anext(messages)).event is None:
                pass
    except TimeoutError:
        pytest.fail(f"{what}: no event in {EVENT_WAIT}s although it is written: held back (buffered)?")
    except StopAsyncIteration:
        pytest.fail(f"{what}: the stream ended")
    return message


async def rest_of(messages: AsyncIterator[SseMessage]) -> list[SseMessage]:
    async with asyncio.timeout(EVENT_WAIT):
        return [message async for message in messages if message.event is not None]


@pytest.mark.stack
async def test_each_event_comes_through_the_proxy_while_the_job_runs(
    proxy_url: str,
    progress_url: str,
    stack_store: JobStore,
    new_job: Callable[[], Awaitable[str]],
    http: aiohttp.ClientSession,
) -> None:
    # No worker takes this job: the test writes each event only once the previous one came
    # through the proxy, so a proxy that held events back would never see the job end.
    job_id = await new_job()
    path = f"{SSE_PATH}{job_id}"
    async with http.get(f"{proxy_url}{path}") as proxied, http.get(f"{progress_url}{path}") as direct:
        assert proxied.status == 200, await proxied.text()
        assert proxied.headers["Content-Type"].startswith("text/event-stream"), proxied.headers
        assert "Content-Encoding" not in proxied.headers, "the proxy compresses the stream"
        through_proxy, straight = read_messages(proxied), read_messages(direct)
        (created,) = await stack_store.events(job_id)
        written = [created.id]
        received = [(await next_event(through_proxy, "the job's first event through the proxy")).id]
        for step in range(1, 4):
            event = await stack_store.append(
                job_id, EventType.PROGRESS,
                {"status": "PROCESSING", "progress": step * 25, "message": f"Step {step}/4", "step": step,
                 "totalSteps": 4},
                status="PROCESSING", progress=step * 25, step=step, total_steps=4,
            )  # fmt: skip
            assert event is not None
            written.append(event.id)
            received.append((await next_event(through_proxy, f"progress {step} through the proxy")).id)
            assert received == written, f"through the proxy: {received}, written: {written}"
        terminal = await stack_store.finish(job_id, EventType.COMPLETE, result="done")
        assert terminal is not None
        written.append(terminal.id)
        received.append((await next_event(through_proxy, "the terminal event through the proxy")).id)
        assert not await rest_of(through_proxy), "events after the terminal one"
        direct_ids = [message.id for message in await rest_of(straight)]

    assert received == written, f"through the proxy: {received}, written: {written}"
    assert received == direct_ids, f"through the proxy: {received}, directly: {direct_ids}"


@pytest.mark.stack
async def test_the_page_and_its_job_calls_work_through_the_proxy(
    proxy_url: str, progress_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{proxy_url}/client/index.html") as page:
        assert page.status == 200 and page.content_type == "text/html", f"page: {page.status}"
    # A browser on the proxy's origin submits a job: the proxy must keep the Host the
    # browser used, or the same-origin rule refuses the call.
    async with http.post(
        f"{proxy_url}/api/jobs", json={"steps": 3, "durationSeconds": 0.3}, headers={"Origin": proxy_url}
    ) as response:
        body = await response.json()
        assert response.status == 202, f"submitting through the proxy: {response.status} {body}"
    job_id = body["jobId"]

    through_proxy = await collect_events(http, f"{proxy_url}{SSE_PATH}{job_id}", timeout=60)
    direct = await collect_events(http, f"{progress_url}{SSE_PATH}{job_id}", timeout=60)

    assert [e.event for e in through_proxy][-1] == "complete", [e.event for e in through_proxy]
    assert [e.id for e in through_proxy] == [e.id for e in direct], (
        "the proxy's stream differs from the service's"
    )
