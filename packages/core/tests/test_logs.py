"""Log lines carry the service, and the job and request in context, in both formats."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from jobprogress_core.logs import REQUEST_ID, ContextFilter, JsonFormatter, TextFormatter, job_scope


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    args = args or ("world",)
    entry = logging.LogRecord("jobprogress.test", logging.INFO, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(entry, name, value)
    return entry


def formatted(formatter: logging.Formatter, entry: logging.LogRecord) -> str:
    ContextFilter("worker-service").filter(entry)
    return formatter.format(entry)


def test_json_lines_carry_the_ids_in_context_and_only_those() -> None:
    plain = json.loads(formatted(JsonFormatter(), record()))
    assert plain["message"] == "hello world" and plain["service"] == "worker-service"
    assert "job_id" not in plain and "request_id" not in plain

    token = REQUEST_ID.set("req-1")
    try:
        with job_scope("job-1"):
            inside = json.loads(formatted(JsonFormatter(), record()))
            given = json.loads(formatted(JsonFormatter(), record(job_id="job-2")))
        after = json.loads(formatted(JsonFormatter(), record()))
    finally:
        REQUEST_ID.reset(token)
    assert (inside["job_id"], inside["request_id"]) == ("job-1", "req-1")
    assert given["job_id"] == "job-2"  # an explicit extra wins over the context
    assert "job_id" not in after and after["request_id"] == "req-1"


async def test_a_job_scope_stays_with_its_task() -> None:
    seen: dict[str, str | None] = {}

    async def run(job_id: str) -> None:
        with job_scope(job_id):
            await asyncio.sleep(0.01)  # the other task runs meanwhile
            entry = record()
            ContextFilter("worker-service").filter(entry)
            seen[job_id] = entry.job_id

    await asyncio.gather(run("a"), run("b"))
    assert seen == {"a": "a", "b": "b"}


def test_text_lines_end_with_the_request_and_keep_tracebacks_after_it() -> None:
    token = REQUEST_ID.set("req-9")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            entry = record(exc_info=sys.exc_info())
        line = formatted(TextFormatter(), entry)
    finally:
        REQUEST_ID.reset(token)
    first, *rest = line.splitlines()
    assert " worker-service jobprogress.test: hello world [request=req-9]" in first
    assert rest and rest[-1] == "ValueError: boom"
    assert "[request=" not in formatted(TextFormatter(), record())
