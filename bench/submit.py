"""POST /api/jobs requests per second: job-queue-service beside an aiohttp handler that
enqueues the job with arq, and a bare aiohttp handler.

The servers run as separate processes on this machine, measured in the same run by the same
raw aiohttp client (keep-alive, fixed concurrency, a bearer token on every request), taking
turns round after round. job-queue-service checks the token's signature, validates with
marshmallow, and counts the submission against the identity's limit, stores the job with its
first event, indexes it and queues it, in one Lua script on one Redis. The arq baseline
(``arq_app.py``, in ``.venv-arq``) enqueues the same body with ``enqueue_job`` on the same
private redis-server; the bare one (``bare_app.py``) uses no Redis. No worker runs, so the
queues only grow (the private Redis is thrown away at the end). With ``--redis-cluster``, a
job-queue-service on a private Redis Cluster (three masters, three replicas) takes turns too;
with ``--before CHECKOUT``, the job-queue-service of an earlier revision, on the same Redis.
Each job-queue-service's Redis connections (on every node) are counted at the end, and every
row has the CPU time (utime + stime) its server process and its Redis (every node of a cluster)
spent per request over its rounds.

    .venv/bin/python bench/submit.py --requests 5000 --concurrency 50 --redis-cluster
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from fanout import BENCH_SECRET_KEY, cpu_seconds, fmt, percentile_ms
from redis import Redis

from jobprogress_core.security import Audience, Tokens, new_identity
from jobprogress_testing import Process, ServiceProcess, Stack, free_port, http_get

ROOT = Path(__file__).resolve().parents[1]
#: The virtualenv of the arq baseline (scripts/bootstrap makes it).
ARQ_PYTHON = ROOT / ".venv-arq" / "bin" / "python"

SERVICE_ROW = "job-queue-service"
ARQ_ROW = "aiohttp + arq enqueue_job"
BARE_ROW = "bare aiohttp handler"
BEFORE_ROW = "job-queue-service (before)"
CLUSTER_ROW = "job-queue-service on Redis Cluster (3 masters)"

BODY = {"type": "build", "steps": 4, "durationSeconds": 120}
ENV = {
    "JOBPROGRESS_SECRET_KEY": BENCH_SECRET_KEY,
    "JOBPROGRESS_LOG_LEVEL": "WARNING",
    # One identity submits everything: the per-identity limit still runs on every
    # request (its Lua script is part of the cost) but never refuses one.
    "JOBPROGRESS_SUBMISSIONS_PER_MINUTE": "1000000",
}


def redis_pids(stack: Stack) -> list[int]:
    """The redis-server processes of ``stack``: its one Redis, or every node of its cluster."""
    if stack.cluster is not None:
        return [node.pid for node in stack.cluster.nodes]
    assert stack.redis is not None
    return [stack.redis.pid]


def redis_connections(stack: Stack, service: ServiceProcess) -> int:
    """``CLIENT LIST`` entries named after ``service``'s process, on every node of its Redis."""
    if stack.cluster is not None:
        ports = [node.port for node in stack.cluster.nodes]
    else:
        assert stack.redis is not None
        ports = [stack.redis.port]
    prefix = f"{service.service}:{service.pid}"
    count = 0
    for port in ports:
        with Redis(port=port, decode_responses=True) as admin:
            count += sum(1 for client in admin.client_list() if client.get("name", "").startswith(prefix))
    return count


async def load(url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    token, _ = Tokens(BENCH_SECRET_KEY).issue(Audience.API, new_identity(), ttl=3600)
    headers = {"Authorization": f"Bearer {token}"}  # the bare handler ignores it
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def one_client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with http.post(url, json=BODY) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"{url}: HTTP {response.status} {(await response.text())[:300]}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one_client() for _ in range(min(50, requests))))  # warm-up
        latencies.clear()
        remaining = requests
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, latencies


def start_baseline(stack: Stack, name: str, python: Path, script: str, *args: str) -> tuple[Process, str]:
    """A baseline server (``bench/<script>``) on a free port, answering; its URL."""
    port = free_port()
    argv = [str(python), str(Path(__file__).with_name(script)), str(port), *args]
    process = Process(name, argv, dict(os.environ), stack.workdir / f"{name}.log")
    process.start()
    process.wait_until(lambda: http_get(f"http://127.0.0.1:{port}/health")[0] == 200, 15, "answering")
    return process, f"http://127.0.0.1:{port}/api/jobs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument(
        "--redis-cluster", action="store_true", help="also job-queue-service on a local Redis Cluster"
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="CHECKOUT",
        help="a checkout of an earlier revision (git worktree add): its job-queue-service runs on "
        "the same Redis, taking turns with the others",
    )
    args = parser.parse_args()
    if not ARQ_PYTHON.exists():
        parser.error(f"{ARQ_PYTHON} is missing: run scripts/bootstrap")

    stack = Stack(env=ENV)
    cluster = Stack(env=ENV, redis_cluster=True) if args.redis_cluster else None
    with stack.running(), cluster.running() if cluster else contextlib.nullcontext():
        assert stack.redis is not None
        queue = stack.start_service("job-queue-service")
        arq, arq_url = start_baseline(stack, "arq-aiohttp", ARQ_PYTHON, "arq_app.py", str(stack.redis.port))
        bare, bare_url = start_baseline(stack, "bare-aiohttp", Path(sys.executable), "bare_app.py")
        targets = {SERVICE_ROW: f"{queue.url}/api/jobs", ARQ_ROW: arq_url, BARE_ROW: bare_url}
        services = {SERVICE_ROW: (stack, queue)}
        # Whose CPU each row's round is: its server process, and the Redis it uses.
        processes = {SERVICE_ROW: [queue.pid], ARQ_ROW: [arq.pid], BARE_ROW: [bare.pid]}
        redises = {SERVICE_ROW: redis_pids(stack), ARQ_ROW: redis_pids(stack), BARE_ROW: []}
        if args.before is not None:  # its own code first on the path: the packages of that checkout
            code = ":".join(str(src) for src in sorted(args.before.resolve().glob("packages/*/src")))
            earlier = stack.start_service("job-queue-service", PYTHONPATH=code)
            targets[BEFORE_ROW] = f"{earlier.url}/api/jobs"
            services[BEFORE_ROW] = (stack, earlier)
            processes[BEFORE_ROW], redises[BEFORE_ROW] = [earlier.pid], redis_pids(stack)
        if cluster is not None:
            on_cluster = cluster.start_service("job-queue-service")
            targets[CLUSTER_ROW] = f"{on_cluster.url}/api/jobs"
            services[CLUSTER_ROW] = (cluster, on_cluster)
            processes[CLUSTER_ROW], redises[CLUSTER_ROW] = [on_cluster.pid], redis_pids(cluster)
        results: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in targets}
        #: CPU seconds of each row's server and of its Redis, over its rounds (warm-ups included).
        cpu = {name: [0.0, 0.0] for name in targets}
        try:
            for round_ in range(args.rounds):  # every other round in reverse: noise hits all alike
                order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
                for name in order:
                    server, redis = cpu_seconds(processes[name]), cpu_seconds(redises[name])
                    results[name].append(asyncio.run(load(targets[name], args.requests, args.concurrency)))
                    cpu[name][0] += cpu_seconds(processes[name]) - server
                    cpu[name][1] += cpu_seconds(redises[name]) - redis
            connections = {name: redis_connections(*where) for name, where in services.items()}
        finally:
            bare.stop()
            arq.stop()
    print(
        f"POST /api/jobs, {args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}, "
        f"{os.cpu_count()} cores, python {sys.version.split()[0]}"
    )
    print(
        "| server | requests/s (median of rounds) | p50 ms | p99 ms | Redis connections "
        "| server CPU µs / request | Redis CPU µs / request |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rounds in results.items():
        rate = statistics.median(rate for rate, _ in rounds)
        latencies = [value for _, values in rounds for value in values]
        sent = len(rounds) * (args.requests + min(50, args.requests))  # with the warm-ups
        server_us, redis_us = (seconds * 1e6 / sent for seconds in cpu[name])
        print(
            f"| {name} | {rate:,.0f} | {fmt(percentile_ms(latencies, 0.5), 2)} | "
            f"{fmt(percentile_ms(latencies, 0.99), 2)} | {connections.get(name, '-')} | "
            f"{server_us:,.0f} | {fmt(redis_us, 0) if redises[name] else '-'} |"
        )
    print()
    for name, rounds in results.items():
        print(f"{name}, requests/s of each round: {' / '.join(f'{rate:,.0f}' for rate, _ in rounds)}")
    medians = {name: statistics.median(rate for rate, _ in rounds) for name, rounds in results.items()}
    print(f"job-queue-service / arq, requests/s: {medians[SERVICE_ROW] / medians[ARQ_ROW]:.2f}")


if __name__ == "__main__":
    main()
