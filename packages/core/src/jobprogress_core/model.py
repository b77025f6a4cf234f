"""The job and event model shared by every service: statuses, event types, JSON on the wire."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from jobprogress_client.protocol import (
    TERMINAL_EVENTS,
    TERMINAL_STATUS_OF,
    TERMINAL_STATUSES,
    EventType,
    JobStatus,
)

__all__ = [
    "BUILTIN_JOB_TYPES",
    "EXTERNAL",
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "TERMINAL_STATUS_OF",
    "Event",
    "EventType",
    "Job",
    "JobStatus",
    "dumps",
    "encode_sse",
    "epoch_iso",
    "iso_time",
    "now_iso",
    "parse_stream_id",
    "seconds_since",
    "stream_id_after",
    "valid_job_id",
]

#: Job types the built-in worker handlers run; the job-queue accepts these.
BUILTIN_JOB_TYPES = ("build", "import", "report")
#: The ``runner`` of a job that no worker runs (``POST /api/jobs`` with ``"runner": "external"``).
EXTERNAL = "external"
_JOB_ID = re.compile(r"\A[0-9a-f]{32}\Z")


def valid_job_id(value: str) -> bool:
    """Job ids are 32 lowercase hex digits (a UUID4 without dashes)."""
    return _JOB_ID.match(value) is not None


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


#: Compact JSON. One encoder for all: ``json.dumps`` with options makes a new one each call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_COMPACT_LOOSE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(data: dict[str, Any]) -> str:
    """Compact JSON, the one encoding used in Redis and on the wire (no NaN or infinity:
    they are not JSON, and :class:`ValueError` says so)."""
    return _COMPACT.encode(data)


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


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Codec:
    """How the value of a :class:`Job` field is written: as text in the job's hash, and in
    its JSON view."""

    to_text: Callable[[Any], str]
    from_text: Callable[[str], Any]
    #: The text a field missing from the hash reads as.
    absent: str = ""
    to_json: Callable[[Any], Any] = _same


TEXT = Codec(_same, _same)
#: ``None`` is the empty string in the hash (and an empty string reads as ``None``).
OPTIONAL_TEXT = Codec(lambda value: value or "", lambda text: text or None)
COUNT = Codec(str, int, absent="0")
FLAG = Codec(lambda value: "1" if value else "0", lambda text: text == "1", absent="0")
JSON_OBJECT = Codec(lambda value: dumps(value) if value else "{}", json.loads, absent="{}")
JSON_LIST = Codec(lambda value: _COMPACT_LOOSE.encode(value) if value else "[]", json.loads, absent="[]")
STATUS = Codec(lambda status: status.value, JobStatus, to_json=lambda status: status.value)
#: Who runs the job: a worker (``worker``, the default) or its submitter (``external``).
RUNNER = Codec(_same, _same, absent="worker")


@dataclass(frozen=True)
class Wire:
    """A :class:`Job` field on the wire. Its key in the hash is its name; ``json`` is its key
    in the JSON view (``None``: internal, never shown); a ``required`` one is in every hash."""

    codec: Codec
    json: str | None
    required: bool = False


def wire(codec: Codec, json: str | None, *, required: bool = False) -> dict[str, Wire]:
    """The metadata of a :class:`Job` field (``field(metadata=wire(…))``)."""
    return {"wire": Wire(codec, json, required)}


@dataclass(frozen=True)
class Job:
    """The state of one job, as stored in its hash and returned by ``GET /api/jobs/{id}``.

    Its fields are the one declaration of both forms: each says how it is written
    (:class:`Wire`), and :data:`JOB_WIRE` lists them in order."""

    id: str = field(metadata=wire(TEXT, "jobId", required=True))
    owner: str = field(metadata=wire(TEXT, None))
    type: str = field(metadata=wire(TEXT, "type", required=True))
    name: str = field(metadata=wire(TEXT, "name"))
    params: dict[str, Any] = field(metadata=wire(JSON_OBJECT, "params"))
    status: JobStatus = field(metadata=wire(STATUS, "status", required=True))
    progress: int = field(default=0, metadata=wire(COUNT, "progress"))
    message: str = field(default="", metadata=wire(TEXT, "message"))
    step: int = field(default=0, metadata=wire(COUNT, "step"))
    total_steps: int = field(default=0, metadata=wire(COUNT, "totalSteps"))
    result: str | None = field(default=None, metadata=wire(OPTIONAL_TEXT, "result"))
    error: str | None = field(default=None, metadata=wire(OPTIONAL_TEXT, "error"))
    created_at: str = field(default="", metadata=wire(TEXT, "createdAt"))
    started_at: str | None = field(default=None, metadata=wire(OPTIONAL_TEXT, "startedAt"))
    finished_at: str | None = field(default=None, metadata=wire(OPTIONAL_TEXT, "finishedAt"))
    worker: str | None = field(default=None, metadata=wire(OPTIONAL_TEXT, "worker"))
    attempts: int = field(default=0, metadata=wire(COUNT, "attempts"))
    last_event_id: str | None = field(default=None, metadata=wire(OPTIONAL_TEXT, "lastEventId"))
    cancel_requested: bool = field(default=False, metadata=wire(FLAG, "cancelRequested"))
    #: ``worker``, or ``external``: no worker runs it, its submitter reports its events.
    runner: str = field(default="worker", metadata=wire(RUNNER, "runner"))
    #: Its ``step`` events as they stand: ``{stepId, name, status, startedAt, endedAt}`` each,
    #: in the order they were first reported (kept by the append script).
    steps: list[dict[str, Any]] = field(default_factory=list, metadata=wire(JSON_LIST, "steps"))
    #: The latest value of each metric key: ``{key: {value, step}}``.
    metrics: dict[str, Any] = field(default_factory=dict, metadata=wire(JSON_OBJECT, "metrics"))
    artifacts: int = field(default=0, metadata=wire(COUNT, "artifacts"))
    annotations: int = field(default=0, metadata=wire(COUNT, "annotations"))
    #: The queue entry whose run holds the job (internal: the claim checked on every report).
    entry: str | None = field(default=None, metadata=wire(OPTIONAL_TEXT, None))

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
        runner: str = "worker",
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
            runner=runner,
        )

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Job:
        return cls(
            **{
                name: spec.codec.from_text(
                    fields[name] if spec.required else fields.get(name, spec.codec.absent)
                )
                for name, spec in JOB_WIRE.items()
            }
        )

    @property
    def created_ms(self) -> int:
        """Creation time in milliseconds since the epoch (0 if unknown)."""
        try:
            return int(datetime.fromisoformat(self.created_at).timestamp() * 1000)
        except ValueError:
            return 0

    def to_hash(self) -> dict[str, str]:
        """Fields to store with HSET; ``None`` becomes the empty string."""
        return {name: to_text(getattr(self, name)) for name, to_text in _TO_TEXT}

    def to_json(self) -> dict[str, Any]:
        """The public JSON view (camelCase, as the API and the ``reset`` event show it)."""
        return {
            spec.json: spec.codec.to_json(getattr(self, name))
            for name, spec in JOB_WIRE.items()
            if spec.json is not None
        }


#: How each field of :class:`Job` is written, by name (its key in the hash), in their order.
JOB_WIRE: dict[str, Wire] = {job_field.name: job_field.metadata["wire"] for job_field in fields(Job)}
#: Each field's name with how it is written in the hash, looked up once (:meth:`Job.to_hash`).
_TO_TEXT = tuple((name, spec.codec.to_text) for name, spec in JOB_WIRE.items())
