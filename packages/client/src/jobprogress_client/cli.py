"""``jobprogress``: the job API and its live progress from a terminal.

    jobprogress submit [--type build] [--steps 4] [--duration 120] [--fail-at-step N] [--watch]
    jobprogress watch JOB_ID        a progress bar with the log lines (indented) above it
    jobprogress watch JOB_ID JOB_ID...
                                    several jobs on one stream, a bar each, to the end of all
    jobprogress watch --all         every unfinished job of yours and each one you submit
                                    meanwhile, a bar each, until Ctrl-C
    jobprogress status JOB_ID [--json]
    jobprogress list [--limit 20]
    jobprogress run [--name N] [--type T] [--steps N] -- CMD [ARG...]
                                    CMD as an external job: its output lines are the job's log

It talks to progress-service (``--url``, ``JOBPROGRESS_URL``, default http://127.0.0.1:8083),
which serves the stream and forwards the job calls. Its identity is a bearer token:
``--token`` or ``JOBPROGRESS_TOKEN``, else one it asks for once and keeps in
``$XDG_CONFIG_HOME/jobprogress/token`` (mode 600), so that later commands see the same jobs.

``watch`` resumes by ``Last-Event-ID`` after a dropped connection, so no log line is lost
or shown twice; on the stream of several jobs that ID holds every job's position. Each line
of one of several jobs begins with its id's first 8 characters and its name (else its type).
Not on a terminal, each change of a bar is a line of its own. Exit codes: 0 completed,
1 failed, 3 cancelled, 4 an error (no such job, service unreachable), 2 bad usage,
130 interrupted. Of several jobs: 0 if all completed, else the worst: 1 if any failed, else 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from .api import Api, ApiError
from .run import run_external
from .screen import Screen
from .watching import EXIT_ERROR, exit_code, watch, watch_many, watch_mine

__all__ = ["main", "parser"]


def token_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "jobprogress" / "token"


async def find_token(http: aiohttp.ClientSession, base: str, given: str | None) -> str:
    """The token given, else the one kept, else a new one (kept for next time)."""
    if given:
        return given
    path = token_path()
    if path.exists():
        return path.read_text().strip()
    async with http.post(f"{base.rstrip('/')}/api/tokens") as response:
        answer = await response.json(content_type=None)
        if response.status != 201:
            raise ApiError(response.status, answer)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(answer["token"])
    return str(answer["token"])


async def run(args: argparse.Namespace, out: TextIO) -> int:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = Api(http, args.url, await find_token(http, args.url, args.token))
        if args.command == "run":
            argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return await run_external(
                http, api.base, api.headers, argv, name=args.name, job_type=args.type, steps=args.steps
            )
        if args.command == "submit":
            body = {"type": args.type, "steps": args.steps, "durationSeconds": args.duration}
            if args.name:
                body["name"] = args.name
            if args.fail_at_step:
                body["failAtStep"] = args.fail_at_step
            answer = await api.call("POST", "/api/jobs", body)
            job_id = answer["jobId"]
            print(job_id, file=out)
            print(f"  page:     {api.base}/client/index.html?job={job_id}", file=out)
            print(f"  status:   {api.base}{answer['links']['self']}", file=out)
            print(f"  progress: {api.base}{answer['links']['progress']}", file=out)
            if not args.watch:
                return 0
            args.job_ids, args.all = [job_id], False
        if args.command in ("submit", "watch"):
            screen = Screen(out, fit=args.all or len(args.job_ids) > 1)
            try:
                if args.all:
                    return exit_code(await watch_mine(api, screen))
                if len(args.job_ids) > 1:
                    return exit_code(await watch_many(api, args.job_ids, screen))
                status = await watch(api, args.job_ids[0], screen)
            finally:
                screen.done()
            return exit_code([status])
        if args.command == "status":
            job = await api.call("GET", f"/api/jobs/{args.job_id}")
            if args.json:
                print(json.dumps(job, indent=2), file=out)
            else:
                # Every field the service gives, in its order; the nested ones (params, links) in --json.
                shown = {
                    key: value
                    for key, value in job.items()
                    if value is not None and not isinstance(value, dict)
                }
                width = max(map(len, shown), default=0)
                for key, value in shown.items():
                    print(f"{key:>{width}}: {value}", file=out)
            return 0
        answer = await api.call("GET", f"/api/jobs?limit={args.limit}")
        for job in answer["jobs"]:
            when, kind, name = job["createdAt"], job["type"], job["name"]
            print(
                f"{job['jobId']}  {job['status']:<10} {job['progress']:3d}%  {when}  {kind}  {name}", file=out
            )
        return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="jobprogress", description=(__doc__ or "").split("\n\n")[0])
    main.add_argument("--url", default=os.environ.get("JOBPROGRESS_URL", "http://127.0.0.1:8083"))
    main.add_argument("--token", default=os.environ.get("JOBPROGRESS_TOKEN"))
    commands = main.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="submit a job; print its id and links")
    submit.add_argument("--type", default="build")
    submit.add_argument("--name")
    submit.add_argument("--steps", type=int, default=4)
    submit.add_argument("--duration", type=float, default=120.0, help="seconds")
    submit.add_argument("--fail-at-step", type=int)
    submit.add_argument("--watch", action="store_true", help="then watch it to its end")
    watch_command = commands.add_parser(
        "watch", help="follow jobs to their end (one stream), or every job of yours (--all)"
    )
    watch_command.add_argument(
        "job_ids", nargs="*", metavar="JOB_ID", help="one job, or several (at most 50) on one stream"
    )
    watch_command.add_argument(
        "--all", action="store_true", help="every job of yours, and those you submit meanwhile, until Ctrl-C"
    )
    status = commands.add_parser("status", help="a job's state")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")
    listing = commands.add_parser("list", help="your recent jobs")
    listing.add_argument("--limit", type=int, default=20)
    run = commands.add_parser("run", help="run a command as an external job: jobprogress run -- CMD [ARG...]")
    run.add_argument("--name", help="the job's name (default: the command line)")
    run.add_argument("--type", help="the job's type (default: external)")
    run.add_argument("--steps", type=int, help="steps the command reports with ::progress STEP/TOTAL")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    return main


async def interruptible(command: Coroutine[Any, Any, int]) -> int:
    """Run ``command``; Ctrl-C (SIGINT) ends it with 130, even when this process was started
    with SIGINT ignored (as a shell starts a job in the background), where Python raises no
    KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        return await command
    except asyncio.CancelledError:
        if not interrupted:
            raise
        task.uncancel()
        return 130
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run" and not [word for word in args.cmd if word != "--"]:
        parser().error("run: name the command to run, after --")
    if args.command == "watch" and args.all == bool(args.job_ids):
        parser().error("watch: name the jobs to watch, or --all (not both)")
    try:
        return asyncio.run(interruptible(run(args, sys.stdout)))
    except ApiError as exc:
        error = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
        print(f"jobprogress: HTTP {exc.status}: {error.get('message', exc.body)}", file=sys.stderr)
    except (aiohttp.ClientError, OSError) as exc:
        print(f"jobprogress: cannot reach {args.url}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
