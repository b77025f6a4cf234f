"""SSE fan-out: progress-service beside nchan (nginx), measured in the same run.

Both servers run as child processes on this machine: progress-service (with a private
redis-server and Consul, through ``jobprogress_testing``) and Debian's nginx with the
nchan module (``bench/setup-nchan`` installs it), one worker, nchan's in-memory store. The
clients are raw asyncio SSE connections in this process; they only split the body into lines
and look at ``data:`` lines. Phases:

- connect: N clients spread over the channels, each until it has its channel's first event
  (at most 100 handshakes in flight, below both servers' listen backlogs); then, with the N
  connections idle, server RSS and the Redis connections held by progress-service;
- latency: clients x events/s each client receives (the producer publishes that rate on
  every channel); the producer stamps ``sent`` into the data, the client takes receive-sent;
  server CPU (utime+stime) per delivered event over the phase. Run ``--rounds`` times with
  the servers taking turns, the rounds of each server pooled;
- max rate: clients on one channel, the producer publishing as fast as it can from a second
  process; delivered events per second (summed over the clients) and CPU per delivered event;
- storm: ``--storm`` clients all connecting at once (no limit on handshakes in flight), as
  after a deploy or a network blip: the time until every one has its channel's first event,
  the server's CPU per connect, and RSS per stream then (only with ``--phases storm``: after
  the connect phase the process's RSS has grown to its clients already); after that a few
  events on every channel, which every client must receive exactly once (counted per client).

    .venv/bin/python bench/fanout.py --clients 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis

from jobprogress_core.keys import Keys
from jobprogress_core.model import Job, now_iso
from jobprogress_core.redis import create_redis
from jobprogress_core.security import Audience, Tokens, new_identity
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import Process, ServiceProcess, Stack, free_port, http_get

HOST = "127.0.0.1"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
CONNECTS_IN_FLIGHT = 100
PUBLISHERS_AT_MAX_RATE = 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_SECRET_KEY = "bench-secret-key-bench-secret-key"
SENT = re.compile(rb'^data:.*"sent":\s*([0-9.]+)', re.MULTILINE)


# --- /proc ------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (nginx workers of their master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS (KiB) of ``pids``."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pids: list[int]) -> float:
    """Sum of utime+stime (seconds) of ``pids``."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / CLOCK_TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- SSE clients ------------------------------------------------------------------------


@dataclass
class Tally:
    """What all clients of a phase received: events, and latencies of events sent after ``since``."""

    latency: bool = False
    since: float = 0.0
    events: int = 0
    unstamped: int = 0
    latencies: list[float] = field(default_factory=list)

    def reset(self, *, latency: bool) -> None:
        self.latency = latency
        self.since = time.time()
        self.events = self.unstamped = 0
        self.latencies.clear()


class Refused(RuntimeError):
    """The server answered a client's GET with another status than 200."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SseClient:
    """One SSE connection: a raw HTTP/1.1 GET, then the body read as lines.

    The body is not de-chunked: nchan's is not chunked, and progress-service writes each
    event as one chunk, so chunk-size lines sit between events and never start with
    ``data:``. A data line without a ``sent`` stamp in a latency phase is counted as
    ``unstamped`` (and reported), so a line split by a chunk boundary would show.
    """

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.pending = bytearray()
        #: Events this client received (``data:`` lines).
        self.events = 0
        self.first_event = asyncio.Event()
        #: Set once :attr:`events` reaches :attr:`wanted` (see :meth:`received`).
        self.wanted = 0
        self.reached = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, path: str, headers: str = "") -> None:
        """Connect, check the status, and return once the first event has arrived.
        ``headers``: more request header lines, each ending with CRLF."""
        reader, self.writer = await asyncio.open_connection(HOST, port)
        head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n{headers}"
        self.writer.write(f"{head}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise Refused(int(status), f"GET {path}: HTTP {status.decode()}: {head[:200]!r}")
        self.task = asyncio.create_task(self._read(reader))
        await self.first_event.wait()

    async def received(self, count: int) -> None:
        """Return once this client has received ``count`` events in all."""
        self.wanted = count
        if self.events < count:
            await self.reached.wait()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(262_144):
            self._feed(data, time.time())

    def _feed(self, data: bytes, received: float) -> None:
        self.pending += data
        end = self.pending.rfind(b"\n") + 1
        if end == 0:
            return
        lines = bytes(self.pending[:end])  # starts at a line start: the rest waits in pending
        del self.pending[:end]
        count = lines.count(b"\ndata:") + lines.startswith(b"data:")
        if not count:
            return
        self.first_event.set()
        self.events += count
        if self.wanted and self.events >= self.wanted:
            self.reached.set()
        tally = self.tally
        tally.events += count
        if tally.latency:
            stamps = [float(sent) for sent in SENT.findall(lines)]
            tally.unstamped += count - len(stamps)
            tally.latencies.extend(received - sent for sent in stamps if sent >= tally.since)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


async def connect_all(
    port: int,
    paths: list[str],
    tally: Tally | None,
    headers: str = "",
    *,
    in_flight: int = CONNECTS_IN_FLIGHT,
) -> list[SseClient]:
    """One client per path, at most ``in_flight`` handshakes at a time; all count into
    ``tally``, or each into a tally of its own with ``None``."""
    gate = asyncio.Semaphore(in_flight)
    clients = [SseClient(tally or Tally()) for _ in paths]

    async def connect(client: SseClient, path: str) -> None:
        async with gate:
            async with asyncio.timeout(120):
                await client.open(port, path, headers)

    try:
        await asyncio.gather(*(connect(client, path) for client, path in zip(clients, paths, strict=True)))
    except BaseException:
        close_all(clients)
        raise
    return clients


def close_all(clients: list[SseClient]) -> None:
    for client in clients:
        client.close()


# --- servers ----------------------------------------------------------------------------


class Publish(Protocol):
    async def __call__(self, channel: str, data: str) -> None: ...


Close = Callable[[], Awaitable[None]]
#: Opens a publisher on a connection of its own: ``functools.partial`` of a module-level
#: function, so it can be sent to the producer process.
OpenPublisher = Callable[[], Awaitable[tuple[Publish, Close]]]


def event_data(channel: str) -> str:
    return json.dumps({"jobId": channel, "ts": now_iso(), "sent": time.time()})


def bench_client(redis_url: str) -> Redis:
    """A client of the stack's Redis (a cluster client for a cluster's URL)."""
    environ = {"REDIS_URL": redis_url, "JOBPROGRESS_SECRET_KEY": BENCH_SECRET_KEY}
    return create_redis(Settings.from_env("progress-service", environ), role="bench")


async def redis_publisher(redis_url: str, keys: Keys) -> tuple[Publish, Close]:
    """progress-service's producer: XADD to the job's event stream."""
    redis = bench_client(redis_url)

    async def publish(channel: str, data: str) -> None:
        await redis.xadd(keys.events(channel), {"type": "log", "data": data})

    return publish, redis.aclose


async def nchan_publisher(port: int) -> tuple[Publish, Close]:
    """nchan's producer: raw keep-alive HTTP/1.1 POSTs to ``/pub/<channel>``."""
    reader, writer = await asyncio.open_connection(HOST, port)

    async def publish(channel: str, data: str) -> None:
        body = data.encode()
        writer.write(
            f"POST /pub/{channel} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split(b" ", 2)[1] not in (b"201", b"202"):
            raise RuntimeError(f"nchan publish: {head[:200]!r}")
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        await reader.readexactly(int(length[1]) if length else 0)

    async def close() -> None:
        writer.close()

    return publish, close


class Target(Protocol):
    """A server under test: where clients connect, how the producer publishes."""

    name: str
    port: int
    publisher: OpenPublisher

    def pids(self) -> list[int]: ...

    async def new_channels(self, count: int) -> list[str]:
        """Fresh channels (jobs), each holding one event already."""
        ...

    def path(self, channel: str) -> str: ...

    async def aclose(self) -> None: ...


class ProgressTarget:
    """progress-service: the producer appends to the job's Redis stream with XADD. The
    clients open each job's stream through a share link (``?share=``), as a page given the
    link would; the jobs belong to one identity of the benchmark's."""

    name = "progress-service"

    def __init__(self, service: ServiceProcess, stack: Stack) -> None:
        self.service = service
        self.port = service.port
        assert stack.redis_url is not None
        keys = Keys()
        self.publisher: OpenPublisher = functools.partial(redis_publisher, stack.redis_url, keys)
        self.redis = bench_client(stack.redis_url)
        self.store = JobStore(self.redis, keys)
        #: The Redis processes it uses (one, or a cluster's nodes), for their CPU and clients.
        servers = stack.cluster.nodes if stack.cluster is not None else [stack.redis]
        self.redis_pids = [server.pid for server in servers if server is not None]
        self.redis_ports = [server.port for server in servers if server is not None]
        self.tokens = Tokens(BENCH_SECRET_KEY)
        self.owner = new_identity()
        self.shares: dict[str, str] = {}

    def pids(self) -> list[int]:
        return [self.service.pid]

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def new_channels(self, count: int) -> list[str]:
        channels = []
        for _ in range(count):
            job = Job.new("build", {}, owner=self.owner)
            await self.store.create(job, {"status": "QUEUED", "sent": time.time()})
            self.shares[job.id], _ = self.tokens.issue(Audience.SHARE, self.owner, ttl=86_400, job=job.id)
            channels.append(job.id)
        return channels

    def path(self, channel: str) -> str:
        return f"/api/progress/{channel}?share={self.shares[channel]}"

    async def redis_connections(self) -> int:
        """``CLIENT LIST`` entries named ``progress-service:<pid>...``, on every Redis node."""
        prefix = f"progress-service:{self.service.pid}"
        count = 0
        for port in self.redis_ports:
            admin = Redis(port=port, decode_responses=True)
            try:
                count += sum(1 for c in await admin.client_list() if c.get("name", "").startswith(prefix))
            finally:
                await admin.aclose()
        return count


class NchanTarget:
    """nchan in nginx (one worker, in-memory store): the producer POSTs to ``/pub/<channel>``."""

    name = "nchan"

    def __init__(self, nginx: Process, port: int) -> None:
        self.nginx = nginx
        self.port = port
        self.publisher: OpenPublisher = functools.partial(nchan_publisher, port)

    def pids(self) -> list[int]:
        return [self.nginx.pid, *children_of(self.nginx.pid)]

    async def aclose(self) -> None:
        """Nothing to close: every publisher has its own connection."""

    async def new_channels(self, count: int) -> list[str]:
        channels = [uuid.uuid4().hex for _ in range(count)]
        publish, close = await self.publisher()
        try:
            for channel in channels:
                await publish(channel, event_data(channel))
        finally:
            await close()
        return channels

    def path(self, channel: str) -> str:
        return f"/sub/{channel}"


NGINX_CONF = """\
{load_module}
worker_processes 1;
worker_rlimit_nofile {fds};
pid {prefix}/nginx.pid;
events {{ worker_connections {fds}; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        location = /health {{ return 200 "ok"; }}
        location ~ ^/sub/(\\w+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_subscriber_first_message oldest;
        }}
        location ~ ^/pub/(\\w+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
    }}
}}
"""


def start_nginx(workdir: Path, fds: int) -> tuple[Process, int]:
    """nginx with nchan in the foreground, on a free port, as our child."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not NCHAN_MODULE.is_file():
        raise SystemExit("nchan is not installed: run bench/setup-nchan")
    prefix = workdir / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            load_module=f"load_module {NCHAN_MODULE};", fds=fds, prefix=prefix, host=HOST, port=port
        )
    )
    argv = [nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    process = Process("nginx", argv, dict(os.environ), prefix / "stdout.log")
    process.start()
    process.wait_until(lambda: http_get(f"http://{HOST}:{port}/health")[0] == 200, 15, "answering")
    return process, port


# --- phases -----------------------------------------------------------------------------


def spread(channels: list[str], clients: int) -> list[str]:
    return [channels[i % len(channels)] for i in range(clients)]


def percentile_ms(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of ``values`` (seconds) in ms; ``None`` when there are none
    (a round shorter than its warm-up second)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


@dataclass
class ConnectResult:
    seconds: float
    rss_per_connection_kib: float
    redis_before: int | None  # Redis connections held with no client (None: no Redis)
    redis_during: int | None  # and with the clients connected


async def held_redis_connections(target: Target) -> int | None:
    return await target.redis_connections() if isinstance(target, ProgressTarget) else None


async def connect_phase(target: Target, clients: int, channels: int) -> ConnectResult:
    ids = await target.new_channels(channels)
    redis_before = await held_redis_connections(target)
    rss_before = rss_kib(target.pids())
    started = time.perf_counter()
    connected = await connect_all(target.port, [target.path(c) for c in spread(ids, clients)], Tally())
    seconds = time.perf_counter() - started
    try:
        await asyncio.sleep(2)  # let the server settle with idle connections
        rss_after = rss_kib(target.pids())
        redis_during = await held_redis_connections(target)
    finally:
        close_all(connected)
    return ConnectResult(seconds, (rss_after - rss_before) / clients, redis_before, redis_during)


@dataclass
class StormResult:
    seconds: float
    #: ``None`` when another phase ran first: the process's RSS had grown to its clients' already.
    rss_per_stream_kib: float | None
    cpu_ms_per_connect: float  # the server's utime+stime until all were connected, per client
    events: int  # appended on every channel once all were connected (after its first one)
    exact: int  # clients that received the first event and every appended one, exactly once
    clients: int
    failures: Counter[str]  # clients that did not connect, by why (``HTTP 503``, ``TimeoutError``)


async def storm_phase(
    target: Target, clients: int, channels: int, events: int, *, first: bool
) -> StormResult:
    """``clients`` all connecting at once; then ``events`` events on every channel, waited
    for (with a deadline) until every client has them all, then counted per client. A
    client the server refuses (a status other than 200) or that fails to connect is counted
    as such, not retried: EventSource gives up on a refusal."""
    ids = await target.new_channels(channels)
    connected = [SseClient(Tally()) for _ in range(clients)]
    failures: Counter[str] = Counter()

    async def connect(client: SseClient, path: str) -> None:
        try:
            async with asyncio.timeout(120):
                await client.open(target.port, path)
        except Refused as exc:
            failures[f"HTTP {exc.status}"] += 1
        except (OSError, TimeoutError) as exc:
            failures[type(exc).__name__] += 1

    rss_before, cpu_before = rss_kib(target.pids()), cpu_seconds(target.pids())
    started = time.perf_counter()
    try:
        await asyncio.gather(
            *(
                connect(client, target.path(c))
                for client, c in zip(connected, spread(ids, clients), strict=True)
            )
        )
        seconds = time.perf_counter() - started
        rss_after, cpu = rss_kib(target.pids()), cpu_seconds(target.pids()) - cpu_before
        publish, close = await target.publisher()
        try:
            for _ in range(events):
                for channel in ids:
                    await publish(channel, event_data(channel))
        finally:
            await close()
        expected = 1 + events
        live = [client for client in connected if client.first_event.is_set()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await asyncio.gather(*(client.received(expected) for client in live))
        await asyncio.sleep(0.5)  # an event sent twice would show by now
        exact = sum(1 for client in connected if client.events == expected)
    finally:
        close_all(connected)
    await asyncio.sleep(1)
    per_stream = (rss_after - rss_before) / clients if first else None
    return StormResult(seconds, per_stream, cpu / clients * 1000, events, exact, clients, failures)


@dataclass
class DeliveryResult:
    delivered: int
    seconds: float
    server_cpu: float
    redis_cpu: float | None
    own_cpu: float
    published: int
    latencies: list[float]
    unstamped: int

    def cpu_us_per_event(self, cpu: float | None) -> float | None:
        return None if cpu is None or not self.delivered else cpu / self.delivered * 1e6


@dataclass
class CpuMeter:
    """CPU seconds of the servers and of this process over a phase."""

    target: Target
    redis_pids: list[int] | None
    marks: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def read(self) -> tuple[float, float, float]:
        redis = cpu_seconds(self.redis_pids) if self.redis_pids else 0.0
        return cpu_seconds(self.target.pids()), redis, own_cpu_seconds()

    def start(self) -> None:
        self.marks = self.read()

    def stop(self) -> tuple[float, float, float]:
        now = self.read()
        server, redis, own = (after - before for after, before in zip(now, self.marks, strict=True))
        return server, redis, own


async def paced_producer(publisher: OpenPublisher, channels: list[str], rate: float, seconds: float) -> int:
    """Publish ``rate`` events/s on every channel (round robin) for ``seconds``; events published."""
    publish, close = await publisher()
    loop = asyncio.get_running_loop()
    interval = 1 / (rate * len(channels))
    started = loop.time()
    sent = 0
    try:
        while (due := started + sent * interval) < started + seconds:
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            channel = channels[sent % len(channels)]
            await publish(channel, event_data(channel))
            sent += 1
    finally:
        await close()
    return sent


async def flat_out_producer(publisher: OpenPublisher, channel: str, seconds: float) -> int:
    """:data:`PUBLISHERS_AT_MAX_RATE` publishers on ``channel`` as fast as they can; events published."""
    deadline = asyncio.get_running_loop().time() + seconds

    async def one() -> int:
        publish, close = await publisher()
        sent = 0
        try:
            while asyncio.get_running_loop().time() < deadline:
                await publish(channel, event_data(channel))
                sent += 1
        finally:
            await close()
        return sent

    return sum(await asyncio.gather(*(one() for _ in range(PUBLISHERS_AT_MAX_RATE))))


def run_flat_out_producer(publisher: OpenPublisher, channel: str, seconds: float) -> int:
    """:func:`flat_out_producer` in the producer process."""
    return asyncio.run(flat_out_producer(publisher, channel, seconds))


async def delivery_phase(
    target: Target,
    meter: CpuMeter,
    paths: list[str],
    produce: Callable[[], Awaitable[int]],
    *,
    latency: bool,
    drain: float,
    headers: str = "",
) -> DeliveryResult:
    """Connect clients, then measure while ``produce`` runs and for ``drain`` seconds after.

    Latencies exclude the first second (warm-up). With ``drain`` 0 (max rate) the count is
    taken when the producer stops: events still queued then are not counted.
    """
    tally = Tally()
    clients = await connect_all(target.port, paths, tally, headers)
    try:
        await asyncio.sleep(0.5)
        tally.reset(latency=latency)
        tally.since += 1.0
        meter.start()
        started = time.perf_counter()
        published = await produce()
        await asyncio.sleep(drain)
        delivered, seconds = tally.events, time.perf_counter() - started
        server, redis, own = meter.stop()
    finally:
        close_all(clients)
    await asyncio.sleep(1)  # let the server drop the closed connections before the next phase
    return DeliveryResult(
        delivered, seconds, server, redis if meter.redis_pids else None, own, published,
        list(tally.latencies), tally.unstamped,
    )  # fmt: skip


# --- report -----------------------------------------------------------------------------


@dataclass
class Rounds:
    """The rounds of one latency phase against one server: pooled, and each on its own."""

    each: list[DeliveryResult] = field(default_factory=list)

    def add(self, result: DeliveryResult) -> None:
        self.each.append(result)

    @property
    def latencies(self) -> list[float]:
        return [latency for result in self.each for latency in result.latencies]

    @property
    def unstamped(self) -> int:
        return sum(result.unstamped for result in self.each)

    def cpu_us_per_event(self) -> float | None:
        delivered = sum(result.delivered for result in self.each)
        cpu = sum(result.server_cpu for result in self.each)
        return cpu / delivered * 1e6 if delivered else None


@dataclass
class Measurements:
    """One server's results; a phase left out by ``--phases`` is ``None`` (or empty)."""

    connect: ConnectResult | None
    latency: dict[str, Rounds]
    max_rate: DeliveryResult | None
    storm: StormResult | None


def versions() -> str:
    def run(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (done.stdout + done.stderr).strip()

    nginx = run(["nginx", "-v"]).rpartition("/")[2]
    nchan = run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"])
    redis = re.search(r"v=(\S+)", run(["redis-server", "--version"]))
    return (
        f"{os.cpu_count()} cores, python {sys.version.split()[0]}, nginx {nginx}, nchan {nchan}, "
        f"redis {redis[1] if redis else '?'}"
    )


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None, baseline: float | None) -> str:
    return f"{value / baseline:.2f}" if value is not None and baseline else "n/a"


def table_rows(measured: Measurements, args: argparse.Namespace) -> list[tuple[str, float | None, int]]:
    """(metric, value, digits) of every table row, for one server."""
    connect, top, storm = measured.connect, measured.max_rate, measured.storm
    rows: list[tuple[str, float | None, int]] = []
    if connect is not None:
        rows += [
            (f"connect {args.clients} clients (s)", connect.seconds, 2),
            ("RSS per idle connection (KiB)", connect.rss_per_connection_kib, 1),
        ]
    if storm is not None:
        label = f"storm of {args.storm} clients at once"
        rows += [
            (f"{label}: time to all connected (s)", storm.seconds, 2),
            (f"{label}: RSS per stream (KiB)", storm.rss_per_stream_kib, 1),
            (f"{label}: server CPU per connect (ms)", storm.cpu_ms_per_connect, 2),
            (f"{label}: clients with all {1 + storm.events} events exactly once", storm.exact, 0),
            (f"{label}: clients refused or failed", sum(storm.failures.values()), 0),
        ]
    for label, phase in measured.latency.items():
        rows += [
            (f"{label}: latency p50 (ms)", percentile_ms(phase.latencies, 0.5), 2),
            (f"{label}: latency p99 (ms)", percentile_ms(phase.latencies, 0.99), 2),
            (f"{label}: server CPU per delivered event (us)", phase.cpu_us_per_event(), 1),
        ]
    if top is not None:
        label = f"max rate, {args.max_clients} clients on 1 channel"
        rows += [
            (f"{label}: delivered events/s", top.delivered / top.seconds, 0),
            (f"{label}: server CPU per delivered event (us)", top.cpu_us_per_event(top.server_cpu), 1),
            (f"{label}: redis-server CPU per delivered event (us)", top.cpu_us_per_event(top.redis_cpu), 1),
            (f"{label}: published events/s", top.published / top.seconds, 0),
            (f"{label}: benchmark process CPU (% of a core)", top.own_cpu / top.seconds * 100, 0),
        ]
    if connect is not None:
        rows.append((f"Redis connections held with {args.clients} clients", connect.redis_during, 0))
    return rows


def print_report(results: dict[str, Measurements], args: argparse.Namespace) -> None:
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"machine: {versions()}")
    print(
        "clients: raw asyncio SSE connections, all in the benchmark process; producer: in it for the "
        "latency phases, in a second process for the max-rate phase"
    )
    print()
    extras = [name for name in results if name not in ("progress-service", "nchan")]
    print(
        "| metric | progress-service |"
        + "".join(f" {name} |" for name in extras)
        + " nchan | progress / nchan |"
        + "".join(f" {EXTRA_RATIOS[name]} |" for name in extras)
    )
    print("|---|---|---|---|" + "---|---|" * len(extras))
    rows = {name: table_rows(measured, args) for name, measured in results.items()}
    for index, (label, progress, digits) in enumerate(rows["progress-service"]):
        nchan = rows["nchan"][index][1]
        others = [rows[name][index][1] for name in extras]
        cells = [fmt(progress, digits), *(fmt(other, digits) for other in others)]
        cells += [fmt(nchan, digits), ratio(progress, nchan)]
        cells += [
            ratio(progress, other) if name == BEFORE else ratio(other, progress)
            for name, other in zip(extras, others, strict=True)
        ]
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    for label in results["progress-service"].latency:
        by_server = (
            f"{name} "
            + " ".join(fmt(percentile_ms(r.latencies, 0.99), 2) for r in measured.latency[label].each)
            for name, measured in results.items()
        )
        print(f"{label}, p99 of each round (ms, in order): {'; '.join(by_server)}")
    print()
    for name, measured in results.items():
        if name != "nchan" and (held := measured.connect) is not None:
            print(f"{name} Redis connections: {held.redis_before} idle, {held.redis_during} with clients")
    storm = results["progress-service"].storm
    if storm is not None and storm.rss_per_stream_kib is None:
        print("storm RSS per stream: n/a after the connect phase (RSS had grown already): --phases storm")
    for name, measured in results.items():
        if measured.storm is not None and measured.storm.failures:
            print(f"{name}: storm clients that did not connect: {dict(measured.storm.failures)}")
    for name, measured in results.items():
        unstamped = sum(result.unstamped for result in measured.latency.values())
        if unstamped:
            print(f"{name}: {unstamped} data lines without a readable `sent` stamp")


# --- main -------------------------------------------------------------------------------


async def measure(
    targets: dict[str, Callable[[], Target]], args: argparse.Namespace
) -> dict[str, Measurements]:
    """Every phase against every server, in one event loop (``asyncio.run``).

    The latency phases run ``--rounds`` times, taking the servers in turns (A B, B A, A B,
    ...), so a noisy minute on this shared machine falls on both; each server's rounds are
    pooled. The connect and max-rate phases run once per server."""
    # The flat-out producer gets a process (and so a core) of its own, started before the phase.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as producer:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(producer, time.sleep, 0)
        made = {name: make() for name, make in targets.items()}
        try:
            meters = {
                name: CpuMeter(target, target.redis_pids if isinstance(target, ProgressTarget) else None)
                for name, target in made.items()
            }
            return await measure_phases(made, meters, producer, args)
        finally:
            for target in made.values():
                await target.aclose()


async def measure_phases(
    targets: dict[str, Target],
    meters: dict[str, CpuMeter],
    producer: ProcessPoolExecutor,
    args: argparse.Namespace,
) -> dict[str, Measurements]:
    phases = set(args.phases)
    connect: dict[str, ConnectResult | None] = dict.fromkeys(targets)
    storm: dict[str, StormResult | None] = dict.fromkeys(targets)
    if "connect" in phases:
        for name, target in targets.items():
            connect[name] = await connect_phase(target, args.clients, args.channels)
            await asyncio.sleep(1)
    if "storm" in phases:
        for name, target in targets.items():
            storm[name] = await storm_phase(
                target, args.storm, args.channels, args.storm_events, first="connect" not in phases
            )
            await asyncio.sleep(1)
    latency: dict[str, dict[str, Rounds]] = {name: {} for name in targets}
    if "latency" in phases:
        for clients, rate in zip(args.latency_clients, args.latency_rates, strict=True):
            label = f"{clients} clients x {rate:g} ev/s"
            for turn in range(args.rounds):
                for name in list(targets)[:: 1 if turn % 2 == 0 else -1]:
                    target = targets[name]
                    ids = await target.new_channels(args.channels)
                    result = await delivery_phase(
                        target, meters[name], [target.path(c) for c in spread(ids, clients)],
                        functools.partial(paced_producer, target.publisher, ids, rate, args.seconds),
                        latency=True, drain=1.0,
                    )  # fmt: skip
                    latency[name].setdefault(label, Rounds()).add(result)
    measured = {}
    for name, target in targets.items():
        max_rate = None
        if "max-rate" in phases:
            (channel,) = await target.new_channels(1)
            flat_out = functools.partial(run_flat_out_producer, target.publisher, channel, args.max_seconds)
            max_rate = await delivery_phase(
                target, meters[name], [target.path(channel)] * args.max_clients,
                functools.partial(asyncio.get_running_loop().run_in_executor, producer, flat_out),
                latency=False, drain=0.0,
            )  # fmt: skip
        measured[name] = Measurements(connect[name], latency[name], max_rate, storm[name])
    return measured


def raise_fd_limit(connections: int) -> int:
    """Soft fd limit up to the hard one (children inherit it); the new limit. Exits when it
    cannot hold ``connections`` and some room besides."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < connections + 200:
        raise SystemExit(f"fd limit {hard} too low for {connections} connections")
    return hard


#: The phases, in the order they run.
PHASES = ("connect", "storm", "latency", "max-rate")
#: The name in the report of the progress-service of ``--before``.
BEFORE = "progress-service (before)"
#: The name in the report of ``--redis-cluster``'s progress-service.
CLUSTER = "progress-service (Redis Cluster)"
#: The ratio column of each extra server: now over before, the cluster over one Redis.
EXTRA_RATIOS = {BEFORE: "now / before", CLUSTER: "cluster / one Redis"}
PROGRESS_ENV = {
    "JOBPROGRESS_MAX_STREAMS": "100000",
    "JOBPROGRESS_STREAMS_PER_IDENTITY": "100000",  # the clients share one address
    "JOBPROGRESS_SSE_SETUPS_PER_SECOND": "10000000",  # measured flat out: no admission cap
    "JOBPROGRESS_SSE_HEARTBEAT_SECONDS": "15",
    "JOBPROGRESS_LOG_LEVEL": "WARNING",
}


def bench_stack() -> Stack:
    """The stack the benchmarks start: private redis-server and Consul."""
    return Stack(env={"JOBPROGRESS_SECRET_KEY": BENCH_SECRET_KEY})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10000, help="idle clients of the connect phase")
    parser.add_argument(
        "--channels", type=int, default=10, help="jobs / nchan channels the clients spread over"
    )
    parser.add_argument("--latency-clients", type=int, nargs=2, default=[100, 1000])
    parser.add_argument(
        "--latency-rates", type=float, nargs=2, default=[20.0, 5.0], help="events/s per client"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each latency round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="latency rounds per server, the servers taking turns"
    )
    parser.add_argument("--max-clients", type=int, default=200)
    parser.add_argument("--storm", type=int, default=5000, help="clients of the storm phase, all at once")
    parser.add_argument(
        "--storm-events", type=int, default=3, help="events on every channel once the storm has connected"
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="the phases to run (all by default)",
    )
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument(
        "--before",
        type=Path,
        metavar="CHECKOUT",
        help="a checkout of an earlier revision (git worktree add): its progress-service runs as a "
        "third server, on the same Redis, taking turns with the others",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="also a progress-service on a local Redis Cluster (3 masters, 3 replicas), taking turns",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    fds = raise_fd_limit(max(args.clients, args.storm))
    stack = bench_stack()
    cluster = (
        Stack(env={"JOBPROGRESS_SECRET_KEY": BENCH_SECRET_KEY}, redis_cluster=True)
        if args.redis_cluster
        else None
    )
    with stack.running(), cluster.running() if cluster is not None else contextlib.nullcontext():
        service = stack.start_service("progress-service", **PROGRESS_ENV)
        earlier = None
        if args.before is not None:  # its own code first on the path: the packages of that checkout
            code = ":".join(str(src) for src in sorted(args.before.resolve().glob("packages/*/src")))
            earlier = stack.start_service("progress-service", PYTHONPATH=code, **PROGRESS_ENV)
        nginx, port = start_nginx(stack.workdir, fds)
        try:
            targets: dict[str, Callable[[], Target]] = {
                "progress-service": lambda: ProgressTarget(service, stack),
                "nchan": lambda: NchanTarget(nginx, port),
            }
            if earlier is not None:
                targets[BEFORE] = lambda: ProgressTarget(earlier, stack)
            if cluster is not None:
                on_cluster = cluster.start_service("progress-service", **PROGRESS_ENV)
                targets[CLUSTER] = lambda: ProgressTarget(on_cluster, cluster)
            results = asyncio.run(measure(targets, args))
        finally:
            nginx.stop()
    print_report(results, args)


if __name__ == "__main__":
    main()
