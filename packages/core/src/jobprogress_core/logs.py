"""Logging set-up: readable lines by default, one JSON object per line when asked
(``JOBPROGRESS_LOG_JSON=1``).

Every line carries the service, and the job and the HTTP request it is about when there is
one: :func:`job_scope` and the request-id middleware (:mod:`.web`) set them in context
variables, so they follow the task that handles the job or the request, and nothing has to
pass them along by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

#: The job the current task works on (worker: a run; services: a request about one job).
JOB_ID: ContextVar[str | None] = ContextVar("job_id", default=None)
#: The HTTP request the current task answers (``X-Request-Id``, given or made up).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

CONTEXT_FIELDS = ("job_id", "request_id")


@contextlib.contextmanager
def job_scope(job_id: str) -> Iterator[None]:
    """Lines logged inside are about ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


def set_job_id(job_id: str) -> None:
    """Lines logged from here to the end of the current task are about ``job_id`` (for a
    request handler, whose task ends with the request)."""
    JOB_ID.set(job_id)


class ContextFilter(logging.Filter):
    """Puts the service and the context's job and request ids on every record (an
    ``extra={"job_id": …}`` given to a call wins)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if getattr(record, "job_id", None) is None:
            record.job_id = JOB_ID.get()
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": getattr(record, "service", None),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level service logger: message``, then ``[request=…]`` when there is one (the
    job id is in the messages about a job)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(service)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request={request_id}]" if request_id else line


def configure_logging(service: str, level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(service))
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
