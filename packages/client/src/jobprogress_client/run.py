"""``jobprogress run -- CMD [ARG...]``: any command as an external job.

Its output goes on to this terminal as it is, and to the job: each line of stdout is a
``log`` event (of stderr, level ``error``); a line ``::progress STEP/TOTAL MESSAGE`` on stdout
is a ``progress`` event instead. Lines are sent in batches (a flush at most every
:data:`FLUSH_SECONDS`, or sooner when a batch is full), in the order they were read, each
keyed so that a retried batch doubles nothing. Bytes that are not UTF-8 are replaced, a last
line without a newline is still a line, and a very long line is cut into lines of
:data:`MAX_LINE` characters (nothing is dropped).

The job ends with the command: ``complete`` for exit status 0, ``failed`` with the status
otherwise; ``cancelled`` on Ctrl-C, or when a cancel is requested from the page or the API
(the command's process group then gets SIGINT or SIGTERM, and SIGKILL after
:data:`GRACE_SECONDS`). The lines of stdout keep their order, and those of stderr theirs;
between the two pipes, the order is that of reading. ``run`` exits
with the command's status (128 + the signal for a command killed by one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import aiohttp

from .reporter import JobEnded, Reporter, start_external_job

__all__ = ["CommandRun", "exit_status", "parse_line", "run_external"]

FLUSH_SECONDS = 0.2
MAX_LINE = 8192
GRACE_SECONDS = 5.0
#: How often the job is asked whether a cancel was requested while the command is quiet.
CANCEL_POLL_SECONDS = 2.0
READ_SIZE = 65536

_PROGRESS = re.compile(r"\A::progress (\d{1,9})/(\d{1,9})(?: (.*))?\Z")


def parse_line(line: str, *, stderr: bool) -> dict[str, Any]:
    """The event of one line of output."""
    if not stderr:
        found = _PROGRESS.match(line)
        if found and 0 <= int(found[1]) <= int(found[2]) and int(found[2]) > 0:
            step, total = int(found[1]), int(found[2])
            event: dict[str, Any] = {"type": "progress", "step": step, "totalSteps": total}
            if found[3]:
                event["message"] = found[3][:500]
            return event
    return {"type": "log", "line": line, "level": "error" if stderr else "info"}


def exit_status(returncode: int) -> int:
    """A shell's exit status for a process's return code (128 + N when killed by signal N)."""
    return returncode if returncode >= 0 else 128 - returncode


class CommandRun:
    """One command run as the external job of ``reporter``."""

    def __init__(
        self,
        reporter: Reporter,
        argv: list[str],
        *,
        cancel_requested: Callable[[], Any],
        echo: tuple[BinaryIO, BinaryIO] | None = None,
    ) -> None:
        self.reporter = reporter
        self.argv = argv
        #: Asks the service whether a cancel was requested (when no answer said so lately).
        self.ask_cancel = cancel_requested
        self.echo = echo or (sys.stdout.buffer, sys.stderr.buffer)
        self.pending: list[dict[str, Any]] = []
        self.lines = 0
        self.interrupted = False
        self.cancelled = False
        #: The job's final event type, once sent.
        self.ending = ""
        self._done = asyncio.Event()
        self._stoppers: set[asyncio.Task[None]] = set()
        self._process: asyncio.subprocess.Process | None = None

    async def run(self) -> int:
        """Run the command to its end and end the job; the command's exit status."""
        loop = asyncio.get_running_loop()
        try:
            # A process group of its own: a stop reaches whatever it started (a shell's
            # children hold its pipes open), and Ctrl-C reaches it once, through us.
            process = self._process = await asyncio.create_subprocess_exec(
                *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, process_group=0
            )
        except OSError as exc:  # no such command, not executable: as a shell says it
            print(f"jobprogress: cannot run {self.argv[0]!r}: {exc.strerror}", file=sys.stderr)
            await self.reporter.send(
                [{"type": "failed", "error": f"cannot run {self.argv[0]!r}: {exc.strerror}"}]
            )
            return 127 if isinstance(exc, FileNotFoundError) else 126
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        assert process.stdout is not None and process.stderr is not None
        sender = asyncio.create_task(self._send_loop())
        try:
            await asyncio.gather(
                self._read(process.stdout, stderr=False), self._read(process.stderr, stderr=True)
            )
            returncode = await process.wait()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            self._done.set()  # the loop sends what is left, never cut off in the middle
            await sender
            await asyncio.gather(*self._stoppers)
        await self._end(returncode)
        return 130 if self.interrupted else exit_status(returncode)

    async def _read(self, stream: asyncio.StreamReader, *, stderr: bool) -> None:
        echo = self.echo[1 if stderr else 0]
        rest = b""
        while chunk := await stream.read(READ_SIZE):
            echo.write(chunk)
            echo.flush()
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                self._add(line, stderr=stderr)
        if rest:
            self._add(rest, stderr=stderr)  # the last line, without its newline

    def _add(self, raw: bytes, *, stderr: bool) -> None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        for start in range(0, max(len(text), 1), MAX_LINE):
            self.pending.append(parse_line(text[start : start + MAX_LINE], stderr=stderr))
            self.lines += 1

    async def _send_loop(self) -> None:
        """Send what has been read, every :data:`FLUSH_SECONDS`, and the rest once the
        command is done; ask about a cancel when quiet; stop the command when one was
        requested."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._done.wait()
            if self.pending:
                await self._flush()
                asked = loop.time()
            elif loop.time() - asked >= CANCEL_POLL_SECONDS:
                self.reporter.cancel_requested = bool(await self.ask_cancel())
                asked = loop.time()
            if self.reporter.cancel_requested and not self.cancelled:
                self.cancelled = True
                self._stop_soon(signal.SIGTERM)
        await self._flush()

    async def _flush(self) -> None:
        events, self.pending = self.pending, []
        if events:
            await self.reporter.send(events)

    async def _end(self, returncode: int) -> None:
        if self.interrupted or self.cancelled:
            why = "Interrupted (Ctrl-C)" if self.interrupted else "Cancelled: the command was stopped"
            final: dict[str, Any] = {"type": "cancelled", "error": why}
        elif returncode == 0:
            final = {"type": "complete", "result": "exit status 0"}
        elif returncode < 0:
            final = {"type": "failed", "error": f"killed by {signal.Signals(-returncode).name}"}
        else:
            final = {"type": "failed", "error": f"exit status {returncode}"}
        self.ending = final["type"]
        with contextlib.suppress(JobEnded):  # ended meanwhile (its time limit): nothing to add
            await self.reporter.send([final])

    def _interrupt(self) -> None:
        """Ctrl-C: passed on to the command's group, which is killed after the grace."""
        self.interrupted = True
        self._stop_soon(signal.SIGINT)

    def _stop_soon(self, signum: int) -> None:
        task = asyncio.get_running_loop().create_task(self._stop(signum))
        self._stoppers.add(task)
        task.add_done_callback(self._stoppers.discard)

    async def _stop(self, signum: int) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            async with asyncio.timeout(GRACE_SECONDS):
                await process.wait()
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):  # what is left of the group, if anything
            os.killpg(process.pid, signal.SIGKILL)


async def run_external(
    http: aiohttp.ClientSession,
    base_url: str,
    headers: dict[str, str],
    argv: list[str],
    *,
    name: str | None = None,
    job_type: str | None = None,
    steps: int | None = None,
) -> int:
    """``jobprogress run``: submit ``argv`` as an external job of the identity of
    ``headers``, say where to watch it (a share link's page: any browser can open it), run it."""
    params: dict[str, Any] = {"name": name or shlex.join(argv)[:100]}
    if job_type:
        params["type"] = job_type
    if steps:
        params["steps"] = steps
    job = await start_external_job(http, base_url, headers=headers, **params)
    async with http.post(f"{base_url}/api/jobs/{job.job_id}/share", headers=headers) as response:
        share = await response.json(content_type=None)
    page = f"{base_url}{share['links']['page']}" if response.status == 201 else job.links.get("self", "")
    print(f"jobprogress: job {job.job_id}, watch it at {page}", file=sys.stderr, flush=True)

    async def cancel_requested() -> bool:
        async with http.get(f"{base_url}/api/jobs/{job.job_id}", headers=headers) as answer:
            return answer.status == 200 and bool((await answer.json()).get("cancelRequested"))

    reporter = Reporter(http, base_url, job.job_id, job.reporter_token)
    command = CommandRun(reporter, argv, cancel_requested=cancel_requested)
    status = await command.run()
    print(
        f"jobprogress: job {job.job_id} ended ({command.ending}): {command.lines} lines "
        f"in {reporter.requests} requests",
        file=sys.stderr,
    )
    return status
