"""The job and event model shared by every service: statuses, event types, JSON on the wire."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


#: Job types the built-in worker handlers run; the job-queue accepts these.
BUILTIN_JOB_TYPES = ("build", "import", "report")
_JOB_ID = re.compile(r"\A[0-9a-f]{32}\Z")


def valid_job_id(value: str) -> bool:
    """Job ids are 32 lowercase hex digits (a UUID4 without dashes)."""
    return _JOB_ID.match(value) is not None


class EventType(StrEnum):
    STATUS = "status"
    PROGRESS = "progress"
    LOG = "log"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RESET = "reset"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset({EventType.COMPLETE, EventType.FAILED, EventType.CANCELLED})
#: The status a job ends in with each terminal event.
TERMINAL_STATUS_OF = {
    EventType.COMPLETE: JobStatus.COMPLETED,
    EventType.FAILED: JobStatus.FAILED,
    EventType.CANCELLED: JobStatus.CANCELLED,
}

_STREAM_ID = re.compile(r"\A([0-9]{1,20})-([0-9]{1,20})\Z")
_UINT64_MAX = 2**64 - 1


def now_iso() -> str:
    """UTC timestamp with milliseconds, as every event's ``ts`` carries it."""
    return iso_time(datetime.now(UTC))


def epoch_iso(seconds: float) -> str:
    """A Unix time as :func:`now_iso` writes timestamps."""
    return iso_time(datetime.fromtimestamp(seconds, UTC))


def iso_time(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_since(timestamp: str) -> float:
    """Seconds from a :func:`now_iso` timestamp until now."""
    return (datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds()


def stream_id_after(left: str, right: str) -> bool:
    """Whether stream ID ``left`` comes strictly after ``right``."""
    return parse_stream_id(left) > parse_stream_id(right)


def parse_stream_id(value: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a comparable tuple; :class:`ValueError` if malformed."""
    match = _STREAM_ID.match(value)
    if match is None:
        raise ValueError(f"not a stream ID: {value[:64]!r}")
    ms, seq = int(match[1]), int(match[2])
    if ms > _UINT64_MAX or seq > _UINT64_MAX:
        raise ValueError(f"stream ID out of range: {value[:64]!r}")
    return ms, seq


def dumps(data: dict[str, Any]) -> str:
    """Compact JSON, the one encoding used in Redis and on the wire."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Event:
    """One entry of a job's event stream; ``id`` is its Redis stream entry ID."""

    id: str
    type: EventType
    data: dict[str, Any]

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Event:
        return cls(id=entry_id, type=EventType(fields["type"]), data=json.loads(fields["data"]))

    @cached_property
    def sse(self) -> bytes:
        """The exact bytes of this event on an SSE stream, encoded once per process."""
        return encode_sse(self.type, dumps(self.data), event_id=self.id)


def encode_sse(event: str, data: str, event_id: str | None = None) -> bytes:
    """Frame one SSE event. ``data`` is single-line JSON, so one ``data:`` line suffices."""
    if "\n" in data or "\r" in data:
        raise ValueError("SSE data must be a single line")
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


@dataclass(frozen=True)
class Job:
    """The state of one job, as stored in its hash and returned by ``GET /api/jobs/{id}``."""

    id: str
    owner: str
    type: str
    name: str
    params: dict[str, Any]
    status: JobStatus
    progress: int = 0
    message: str = ""
    step: int = 0
    total_steps: int = 0
    result: str | None = None
    error: str | None = None
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None
    attempts: int = 0
    last_event_id: str | None = None
    cancel_requested: bool = False
    #: The queue entry whose run holds the job (internal: the claim checked on every report).
    entry: str | None = None

    @classmethod
    def new(
        cls,
        job_type: str,
        params: dict[str, Any],
        *,
        owner: str,
        name: str | None = None,
        total_steps: int = 0,
        message: str = "Waiting for a worker",
    ) -> Job:
        """A freshly submitted job: a new id, ``QUEUED``, created now."""
        return cls(
            id=uuid.uuid4().hex,
            owner=owner,
            type=job_type,
            name=name or f"{job_type} job",
            params=params,
            status=JobStatus.QUEUED,
            total_steps=total_steps,
            message=message,
            created_at=now_iso(),
        )

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Job:
        def optional(name: str) -> str | None:
            value = fields.get(name, "")
            return value or None

        return cls(
            id=fields["id"],
            owner=fields.get("owner", ""),
            type=fields["type"],
            name=fields.get("name", ""),
            params=json.loads(fields.get("params", "{}")),
            status=JobStatus(fields["status"]),
            progress=int(fields.get("progress", 0)),
            message=fields.get("message", ""),
            step=int(fields.get("step", 0)),
            total_steps=int(fields.get("total_steps", 0)),
            result=optional("result"),
            error=optional("error"),
            created_at=fields.get("created_at", ""),
            started_at=optional("started_at"),
            finished_at=optional("finished_at"),
            worker=optional("worker"),
            attempts=int(fields.get("attempts", 0)),
            last_event_id=optional("last_event_id"),
            cancel_requested=fields.get("cancel_requested") == "1",
            entry=optional("entry"),
        )

    @property
    def created_ms(self) -> int:
        """Creation time in milliseconds since the epoch (0 if unknown)."""
        try:
            return int(datetime.fromisoformat(self.created_at.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return 0

    def to_hash(self) -> dict[str, str]:
        """Fields to store with HSET; ``None`` becomes the empty string."""
        return {
            "id": self.id,
            "owner": self.owner,
            "type": self.type,
            "name": self.name,
            "params": dumps(self.params),
            "status": self.status.value,
            "progress": str(self.progress),
            "message": self.message,
            "step": str(self.step),
            "total_steps": str(self.total_steps),
            "result": self.result or "",
            "error": self.error or "",
            "created_at": self.created_at,
            "started_at": self.started_at or "",
            "finished_at": self.finished_at or "",
            "worker": self.worker or "",
            "attempts": str(self.attempts),
            "last_event_id": self.last_event_id or "",
            "cancel_requested": "1" if self.cancel_requested else "0",
            "entry": self.entry or "",
        }

    def to_json(self) -> dict[str, Any]:
        """The public JSON view (camelCase, as the API and the ``reset`` event show it)."""
        return {
            "jobId": self.id,
            "type": self.type,
            "name": self.name,
            "params": self.params,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "step": self.step,
            "totalSteps": self.total_steps,
            "result": self.result,
            "error": self.error,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "worker": self.worker,
            "attempts": self.attempts,
            "lastEventId": self.last_event_id,
            "cancelRequested": self.cancel_requested,
        }
