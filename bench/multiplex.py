"""Many jobs on one stream beside one stream per job, measured in the same run.

Starts the stack (private redis-server and Consul, one progress-service) and, in each round,
the two ways for ``--clients`` viewers to watch the same ``--jobs`` jobs, taking turns:

- single: every viewer opens one ``GET /api/progress/{job}`` per job (clients x jobs
  connections), as a page did before;
- multiplexed: every viewer opens one ``GET /api/progress?job=...`` stream of all the jobs.

The producer appends ``--rate`` events/s to every job for ``--seconds``. Reported per way:
events delivered, progress-service CPU (utime+stime) per delivered event, delivery latency
(receive - the producer's stamp) p50/p99, the Redis connections the process holds; and, for
the multiplexed stream, the length of its compound SSE ``id`` (the ID of a 50-job stream
against a single stream's entry ID).

    .venv/bin/python bench/multiplex.py --jobs 50 --clients 20 --rate 2 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys

import aiohttp
from fanout import (
    PROGRESS_ENV,
    CpuMeter,
    DeliveryResult,
    ProgressTarget,
    bench_stack,
    delivery_phase,
    paced_producer,
    percentile_ms,
    raise_fd_limit,
    ratio,
    versions,
)

from jobprogress_client import collect_events
from jobprogress_core.security import Audience

WAYS = ("single", "multiplexed")


def jobs_path(jobs: list[str]) -> str:
    return "/api/progress?" + "&".join(f"job={job}" for job in jobs)


async def id_lengths(target: ProgressTarget, jobs: list[str], authorization: str, events: int) -> list[int]:
    """The IDs of one multiplexed stream over ``jobs``: their first ``events`` (fewer than
    the jobs hold by now)."""
    async with aiohttp.ClientSession(headers={"Authorization": authorization}) as http:
        url = f"http://127.0.0.1:{target.port}{jobs_path(jobs)}"
        received = await collect_events(http, url, stop_after=events, timeout=60)
    return [len(event.id) for event in received]


async def one_round(
    target: ProgressTarget, way: str, args: argparse.Namespace, authorization: str
) -> tuple[DeliveryResult, int, list[int]]:
    jobs = await target.new_channels(args.jobs)
    if way == "single":
        paths, headers = [target.path(job) for _ in range(args.clients) for job in jobs], ""
    else:
        paths, headers = [jobs_path(jobs)] * args.clients, f"Authorization: {authorization}\r\n"
    produce = functools.partial(paced_producer, target.publisher, jobs, args.rate, args.seconds)
    meter = CpuMeter(target, None)
    result = await delivery_phase(target, meter, paths, produce, latency=True, drain=2.0, headers=headers)
    connections = await target.redis_connections()
    events = len(jobs) * int(args.rate * args.seconds * 0.9)
    lengths = await id_lengths(target, jobs, authorization, events) if way == "multiplexed" else []
    return result, connections, lengths


async def run(args: argparse.Namespace) -> bool:
    stack = bench_stack()
    with stack.running():
        service = stack.start_service("progress-service", **PROGRESS_ENV)
        target = ProgressTarget(service, stack)
        token, _ = target.tokens.issue(Audience.API, target.owner, ttl=86_400)
        authorization = f"Bearer {token}"
        results: dict[str, list[DeliveryResult]] = {way: [] for way in WAYS}
        connections: dict[str, int] = {}
        lengths: list[int] = []
        try:
            for round_ in range(args.rounds):
                for way in WAYS if round_ % 2 == 0 else reversed(WAYS):
                    result, held, found = await one_round(target, way, args, authorization)
                    results[way].append(result)
                    connections[way] = max(connections.get(way, 0), held)
                    lengths += found
        finally:
            await target.aclose()
    expected = args.jobs * args.clients
    print(f"# {versions()}")
    print(
        f"# {args.jobs} jobs, {args.clients} viewers, {args.rate:g} events/s per job for "
        f"{args.seconds:g} s, {args.rounds} rounds (ways taking turns)"
    )
    print("| way | connections | events delivered | CPU µs / event | p50 ms | p99 ms | Redis connections |")
    print("|---|---|---|---|---|---|---|")
    cpu: dict[str, float] = {}
    for way in WAYS:
        rounds = results[way]
        delivered = sum(r.delivered for r in rounds)
        published = sum(r.published for r in rounds)
        cpu[way] = sum(r.server_cpu for r in rounds) / delivered * 1e6 if delivered else float("nan")
        latencies = [latency for r in rounds for latency in r.latencies]
        print(
            f"| {way} | {expected if way == 'single' else args.clients:,} | "
            f"{delivered:,} of {published * args.clients:,} | {cpu[way]:.1f} | "
            f"{percentile_ms(latencies, 0.5) or 0:.1f} | {percentile_ms(latencies, 0.99) or 0:.1f} | "
            f"{connections[way]} |"
        )
    print(f"\nCPU per event, multiplexed / single: {ratio(cpu['multiplexed'], cpu['single'])}")
    print(
        f"compound ID of a {args.jobs}-job stream: median {statistics.median(lengths):.0f}, "
        f"max {max(lengths)} characters (an entry ID: 15)"
    )
    return all(r.delivered >= r.published * args.clients for way in WAYS for r in results[way])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=20, help="viewers, each watching every job")
    parser.add_argument("--rate", type=float, default=2.0, help="events/s appended to every job")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit(args.jobs * args.clients)
    if not asyncio.run(run(args)):
        sys.exit("some viewer missed events")


if __name__ == "__main__":
    main()
