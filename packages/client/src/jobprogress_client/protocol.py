"""The vocabulary of the event protocol, shared by the services and every client: the job
statuses, the event types, and which of them are final (see SPEC, "Event protocol")."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ANNOTATION_LEVELS",
    "ARTIFACT_KINDS",
    "ARTIFACT_SCHEMES",
    "ETA_SECONDS_MAX",
    "LOG_LEVELS",
    "MESSAGE_MAX",
    "METRICS_PER_EVENT_MAX",
    "METRIC_KEY_MAX",
    "NAME_MAX",
    "STEP_ID_MAX",
    "STEP_STATUSES",
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "TERMINAL_STATUS_OF",
    "URL_MAX",
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
    ANNOTATION = "annotation"
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
#: ``level`` of an ``annotation`` event (a notice shown above the log).
ANNOTATION_LEVELS = ("notice", "warning", "error")
#: The schemes an ``artifact``'s ``url`` may have (never ``javascript:`` or ``data:``).
ARTIFACT_SCHEMES = ("http", "https")


#: Sizes of the richer events, the same for handlers and reporters: a step's or an artifact's
#: name and an annotation's title; a step's id; a metric's key; metrics in one event; an
#: artifact's URL; an annotation's message; an estimate of the time left.
NAME_MAX = 200
STEP_ID_MAX = 128
METRIC_KEY_MAX = 128
METRICS_PER_EVENT_MAX = 100
URL_MAX = 2048
MESSAGE_MAX = 1000
ETA_SECONDS_MAX = 10_000_000
