"""The vocabulary of the event protocol, shared by the services and every client: the job
statuses, the event types, and which of them are final (see SPEC, "Event protocol")."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ARTIFACT_KINDS",
    "LOG_LEVELS",
    "STEP_STATUSES",
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "TERMINAL_STATUS_OF",
    "EventType",
    "JobStatus",
]


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


class EventType(StrEnum):
    STATUS = "status"
    PROGRESS = "progress"
    LOG = "log"
    STEP = "step"
    METRIC = "metric"
    ARTIFACT = "artifact"
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

#: ``level`` of a ``log`` event.
LOG_LEVELS = ("debug", "info", "warning", "error")
#: ``status`` of a ``step`` event (a step is reported when it starts and again when it ends).
STEP_STATUSES = ("running", "completed", "failed", "skipped", "cancelled")
#: ``kind`` of an ``artifact`` event: what its ``url`` points at.
ARTIFACT_KINDS = ("file", "image", "link", "table")
