"""The ``data`` of the richer events (``step``, ``metric``, ``artifact``, ``annotation``) and
of an estimate of the time left, built one way for the worker's handlers and for reporters.

A reporter's events are validated at the edge (``job_queue_service.report_schemas``, with
the same limits from :mod:`jobprogress_client.protocol`); a handler's are checked here, where
a mistake is the handler's own: :class:`ValueError` names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from jobprogress_client.protocol import (
    ANNOTATION_LEVELS,
    ARTIFACT_KINDS,
    ARTIFACT_SCHEMES,
    MESSAGE_MAX,
    METRIC_KEY_MAX,
    METRICS_PER_EVENT_MAX,
    NAME_MAX,
    STEP_ID_MAX,
    STEP_STATUSES,
    URL_MAX,
)

__all__ = [
    "JOB_LIMITS",
    "EtaEstimate",
    "EventLimit",
    "annotation_data",
    "artifact_data",
    "metric_data",
    "step_data",
]

#: The most of each richer event a job may have: distinct steps, distinct metric keys,
#: artifacts, annotations. A batch that would pass one is refused whole.
JOB_LIMITS = {"step": 500, "metric": 100, "artifact": 200, "annotation": 200}
_WHAT = {"step": "steps", "metric": "metric keys", "artifact": "artifacts", "annotation": "annotations"}


class EventLimit(ValueError):
    """A job would have more of a kind of event than :data:`JOB_LIMITS` allows."""

    def __init__(self, kind: str, most: int) -> None:
        super().__init__(f"A job has at most {most} {_WHAT.get(kind, kind)}")
        self.kind = kind
        self.most = most


def step_data(
    step_id: str,
    status: str,
    *,
    name: str | None = None,
    started_at: str | None = None,
    ended_at: str | None = None,
) -> dict[str, Any]:
    _text("stepId", step_id, STEP_ID_MAX)
    _one_of("status", status, STEP_STATUSES)
    if name is not None:
        _text("name", name, NAME_MAX)
    return {"stepId": step_id, "name": name, "status": status, "startedAt": started_at, "endedAt": ended_at}


def metric_data(values: Mapping[str, float], *, step: int | None = None) -> dict[str, Any]:
    if not 1 <= len(values) <= METRICS_PER_EVENT_MAX:
        raise ValueError(f"metrics: 1 to {METRICS_PER_EVENT_MAX} per event, not {len(values)}")
    metrics = []
    for key, value in values.items():
        _text("metric key", key, METRIC_KEY_MAX)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"metric {key!r}: a finite number, not {value!r}")
        metrics.append({"key": key, "value": value})
    if step is not None:
        _count("step", step)
    return {"metrics": metrics, "step": step}


def artifact_data(
    name: str, *, url: str, kind: str = "file", mime: str | None = None, size: int | None = None
) -> dict[str, Any]:
    _text("name", name, NAME_MAX)
    _one_of("kind", kind, ARTIFACT_KINDS)
    parts = urlsplit(url)
    if len(url) > URL_MAX or parts.scheme not in ARTIFACT_SCHEMES or not parts.netloc:
        raise ValueError(f"url: an absolute {'/'.join(ARTIFACT_SCHEMES)} URL of at most {URL_MAX} characters")
    if size is not None:
        _count("size", size)
    return {"name": name, "kind": kind, "url": url, "mime": mime, "size": size}


def annotation_data(level: str, message: str, *, title: str | None = None) -> dict[str, Any]:
    _one_of("level", level, ANNOTATION_LEVELS)
    _text("message", message, MESSAGE_MAX)
    data: dict[str, Any] = {"level": level, "message": message}
    if title is not None:
        _text("title", title, NAME_MAX)
        data["title"] = title
    return data


def _text(what: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise ValueError(f"{what}: 1 to {limit} characters, not {value!r:.80}")


def _count(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: a whole number of at least 0, not {value!r:.80}")


def _one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what}: one of {', '.join(allowed)}, not {value!r:.80}")


class EtaEstimate:
    """Seconds left, from how fast the percentage rose lately: an exponential moving
    average of the rate between reports, so that it settles as they come; ``None`` until
    there is a rate to go by."""

    def __init__(self, started_at: float, percent: int, *, weight: float = 0.3) -> None:
        self.weight = weight
        self._last = (started_at, percent)
        self._rate: float | None = None  # percent per second

    def update(self, now: float, percent: int) -> int | None:
        then, before = self._last
        if now > then and percent >= before:
            rate = (percent - before) / (now - then)
            self._rate = rate if self._rate is None else self.weight * rate + (1 - self.weight) * self._rate
            self._last = (now, percent)
        if percent >= 100:
            return 0
        if not self._rate:
            return None
        return round((100 - percent) / self._rate)
