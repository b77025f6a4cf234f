"""``jobprogress run`` with a command that prints as fast as it can, beside the same command
with its output to ``/dev/null``, in the same run.

Starts the stack (private redis-server and Consul, job-queue-service and progress-service,
the event streams' cap raised above ``--lines``), runs ``jobprogress run -- python -c
'print each number'`` ``--rounds`` times, and checks each time that the job's log holds every
line once, in order. Prints lines/s, the requests the reporter made and the wall time, and
the bare command's time for comparison.

    .venv/bin/python bench/run.py --lines 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fanout import bench_stack
from redis import Redis

from jobprogress_core.keys import Keys

CLI = Path(sys.executable).with_name("jobprogress")


def printer(lines: int) -> list[str]:
    return [sys.executable, "-c", f"import sys\nfor n in range({lines}): print(n)"]


def run_once(url: str, lines: int, config: Path) -> tuple[float, int, str]:
    """Seconds, requests made, and the job id of one ``jobprogress run``."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "JOBPROGRESS_URL": url}
    started = time.perf_counter()
    done = subprocess.run(
        [str(CLI), "run", "--", *printer(lines)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    summary = done.stderr.strip().splitlines()[-1]  # "jobprogress: job ID ended (...): N lines in R requests"
    job_id, requests = summary.split()[2], int(summary.split(" in ")[-1].split()[0])
    return seconds, requests, job_id


def logged_lines(redis: Redis, keys: Keys, job_id: str) -> list[str]:
    lines = []
    for _, fields in redis.xrange(keys.events(job_id)):
        if fields["type"] == "log":
            lines.append(json.loads(fields["data"])["line"])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    stack = bench_stack()
    with stack.running(), tempfile.TemporaryDirectory() as config:
        cap = {"JOBPROGRESS_EVENT_STREAM_MAXLEN": str(args.lines * 2), "JOBPROGRESS_LOG_LEVEL": "WARNING"}
        stack.start_service("job-queue-service", **cap, JOBPROGRESS_REPORTS_PER_MINUTE="1000000")
        progress = stack.start_service("progress-service", **cap)
        assert stack.redis_url is not None
        redis = Redis.from_url(stack.redis_url, decode_responses=True)
        runs, bare = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            subprocess.run(printer(args.lines), stdout=subprocess.DEVNULL, check=True)
            bare.append(time.perf_counter() - started)
            seconds, requests, job_id = run_once(progress.url, args.lines, Path(config))
            if logged_lines(redis, Keys(), job_id) != [str(n) for n in range(args.lines)]:
                raise SystemExit(f"job {job_id}: its log is not every line once, in order")
            runs.append((seconds, requests))
        redis.close()
    seconds = statistics.median(s for s, _ in runs)
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"every line once, in order: {args.rounds} of {args.rounds} runs")
    print()
    print("| run | lines | seconds (median) | lines/s | requests | lines per request |")
    print("|---|---|---|---|---|---|")
    requests = runs[0][1]
    print(
        f"| jobprogress run | {args.lines:,} | {seconds:.2f} | {args.lines / seconds:,.0f} | "
        f"{requests:,} | {args.lines / requests:,.0f} |"
    )
    bare_seconds = statistics.median(bare)
    print(f"| the command alone, to /dev/null | {args.lines:,} | {bare_seconds:.2f} | "
          f"{args.lines / bare_seconds:,.0f} | 0 | n/a |")  # fmt: skip


if __name__ == "__main__":
    main()
