"""POST /api/jobs requests per second: job-queue-service beside a bare aiohttp handler.

Both servers run as separate processes on this machine, measured in the same run by the same
raw aiohttp client (keep-alive, fixed concurrency, a bearer token on every request).
job-queue-service checks the token's signature, validates with
marshmallow, writes the job hash and first event in one Lua script, and adds the queue entry:
two Redis round trips, against a private redis-server. No worker runs, so the queue only grows
(the private Redis is thrown away at the end).

    .venv/bin/python bench/submit.py --requests 5000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from fanout import BENCH_SECRET_KEY, fmt, percentile_ms

from jobprogress_core.security import Audience, Tokens, new_identity
from jobprogress_testing import Process, Stack, free_port, http_get

BODY = {"type": "build", "steps": 4, "durationSeconds": 120}


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
                        raise RuntimeError(f"{url}: HTTP {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one_client() for _ in range(min(50, requests))))  # warm-up
        latencies.clear()
        remaining = requests
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    args = parser.parse_args()

    stack = Stack(
        env={
            "JOBPROGRESS_SECRET_KEY": BENCH_SECRET_KEY,
            "JOBPROGRESS_LOG_LEVEL": "WARNING",
            # One identity submits everything: the per-identity limit still runs on every
            # request (its Lua script is part of the cost) but never refuses one.
            "JOBPROGRESS_SUBMISSIONS_PER_MINUTE": "1000000",
        }
    )
    with stack.running():
        queue = stack.start_service("job-queue-service")
        bare_port = free_port()
        bare = Process(
            "bare-aiohttp",
            [sys.executable, str(Path(__file__).with_name("bare_app.py")), str(bare_port)],
            dict(os.environ),
            stack.workdir / "bare.log",
        )
        bare.start()
        bare.wait_until(lambda: http_get(f"http://127.0.0.1:{bare_port}/health")[0] == 200, 15, "answering")
        targets = {
            "job-queue-service": f"{queue.url}/api/jobs",
            "bare aiohttp handler": f"http://127.0.0.1:{bare_port}/api/jobs",
        }
        results: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in targets}
        try:
            for _ in range(args.rounds):
                for name, url in targets.items():
                    results[name].append(asyncio.run(load(url, args.requests, args.concurrency)))
        finally:
            bare.stop()
    print(
        f"POST /api/jobs, {args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}, "
        f"{os.cpu_count()} cores, python {sys.version.split()[0]}"
    )
    print("| server | requests/s (median of rounds) | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, rounds in results.items():
        rate = statistics.median(rate for rate, _ in rounds)
        latencies = [value for _, values in rounds for value in values]
        print(
            f"| {name} | {rate:,.0f} | {fmt(percentile_ms(latencies, 0.5), 2)} | "
            f"{fmt(percentile_ms(latencies, 0.99), 2)} |"
        )


if __name__ == "__main__":
    main()
