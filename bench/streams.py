"""Many concurrent streams on one progress-service process, every event to every client.

Starts the stack (private redis-server and Consul, one progress-service), opens ``--streams``
raw SSE clients spread over ``--jobs`` jobs (each until its job's first event), appends
``--events`` events to every job with ``XADD``, then counts what every single client received.
Prints the connect time, the server's RSS, the Redis connections it holds, and how many
clients got every event (the run fails if any did not).

    .venv/bin/python bench/streams.py --streams 15000 --jobs 50 --events 20
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from fanout import (
    ProgressTarget,
    bench_stack,
    close_all,
    connect_all,
    event_data,
    raise_fd_limit,
    rss_kib,
    spread,
)


async def run(target: ProgressTarget, args: argparse.Namespace) -> bool:
    jobs = await target.new_channels(args.jobs)
    rss_before = rss_kib(target.pids())
    redis_before = await target.redis_connections()
    paths = [target.path(job) for job in spread(jobs, args.streams)]
    started = time.perf_counter()
    clients = await connect_all(target.port, paths, None)  # a tally per client
    connect_seconds = time.perf_counter() - started
    try:
        publish, close = await target.publisher()
        try:
            for _ in range(args.events):
                for job in jobs:
                    await publish(job, event_data(job))
        finally:
            await close()
        expected = 1 + args.events  # the job's first event, then the published ones
        deadline = time.perf_counter() + args.wait
        while time.perf_counter() < deadline:
            if all(client.tally.events >= expected for client in clients):
                break
            await asyncio.sleep(0.2)
        delivered_seconds = time.perf_counter() - started - connect_seconds
        complete = sum(client.tally.events == expected for client in clients)
        received = sum(client.tally.events for client in clients)
        print(f"streams: {args.streams} on one progress-service process, over {args.jobs} jobs")
        print(f"connect all: {connect_seconds:.2f} s")
        rss_after = rss_kib(target.pids())
        print(f"server RSS: {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB with streams")
        print(
            f"Redis connections held: {redis_before} before, {await target.redis_connections()} with streams"
        )
        print(
            f"events: {args.events} per job published; {received:,} data lines received of "
            f"{expected * args.streams:,} expected, within {delivered_seconds:.1f} s"
        )
        print(f"clients with every event, exactly once: {complete:,} of {args.streams:,}")
        return bool(complete == args.streams)
    finally:
        close_all(clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=15_000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--events", type=int, default=20, help="events appended to every job")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for delivery")
    args = parser.parse_args()
    raise_fd_limit(args.streams)
    stack = bench_stack()
    with stack.running():
        service = stack.start_service(
            "progress-service",
            JOBPROGRESS_MAX_STREAMS=str(args.streams + 100),
            JOBPROGRESS_STREAMS_PER_IDENTITY=str(args.streams + 100),  # the clients share one address
            JOBPROGRESS_SSE_SETUPS_PER_SECOND="10000000",  # all at once: no admission cap
            JOBPROGRESS_LOG_LEVEL="WARNING",
        )
        assert stack.redis_url is not None
        ok = asyncio.run(run(ProgressTarget(service, stack), args))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
