"""The body of ``POST /api/jobs/{id}/events`` (marshmallow): one event, or
``{"events": [...]}`` of at most :data:`MAX_BATCH`, each validated by the schema of its
``type`` with the fields the worker writes for that type. Unknown fields are rejected."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from jobprogress_client.protocol import (
    ANNOTATION_LEVELS,
    ARTIFACT_KINDS,
    ARTIFACT_SCHEMES,
    ETA_SECONDS_MAX,
    LOG_LEVELS,
    MESSAGE_MAX,
    METRIC_KEY_MAX,
    METRICS_PER_EVENT_MAX,
    NAME_MAX,
    STEP_ID_MAX,
    STEP_STATUSES,
    URL_MAX,
    EventType,
)

from .schemas import utf8_text

__all__ = ["EVENT_SCHEMAS", "MAX_BATCH", "REPORTABLE", "load_events"]

MAX_BATCH = 500
#: The event types a reporter may send (``reset`` is the server's own).
REPORTABLE = tuple(event_type.value for event_type in EventType if event_type is not EventType.RESET)


def text(max_length: int, **kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(min=1, max=max_length), utf8_text], **kwargs)


def count(**kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, **kwargs)


def timestamp(value: str) -> None:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("Not an ISO 8601 timestamp.") from None


def finite(value: float) -> None:
    if not math.isfinite(value):
        raise ValidationError("Not a finite number.")


class EventSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(REPORTABLE))
    key = text(
        200, metadata={"description": "Idempotency key: an event whose key was appended before is not again."}
    )


class StatusEventSchema(EventSchema):
    status = fields.String(load_default="PROCESSING", validate=validate.Equal("PROCESSING"))
    message = text(MESSAGE_MAX, required=True)


class ProgressEventSchema(EventSchema):
    progress = count(validate=validate.Range(min=0, max=100))
    step = count(validate=validate.Range(min=0, max=100_000))
    total_steps = count(data_key="totalSteps", validate=validate.Range(min=1, max=100_000))
    message = text(MESSAGE_MAX)
    eta_seconds = count(
        data_key="etaSeconds",
        validate=validate.Range(min=0, max=ETA_SECONDS_MAX),
        metadata={"description": "An estimate of the seconds left; leave it out when unknown."},
    )

    @validates_schema
    def percent_known(self, data: dict[str, Any], **kwargs: Any) -> None:
        step, total = data.get("step"), data.get("total_steps")
        if "progress" not in data and (step is None or total is None):
            raise ValidationError("Give progress, or step and totalSteps.", field_name="progress")
        if step is not None and total is not None and step > total:
            raise ValidationError(f"Must be at most totalSteps ({total}).", field_name="step")


class LogEventSchema(EventSchema):
    line = fields.String(required=True, validate=[validate.Length(max=8192), utf8_text])
    level = fields.String(load_default="info", validate=validate.OneOf(LOG_LEVELS))


class StepEventSchema(EventSchema):
    step_id = text(STEP_ID_MAX, data_key="stepId", required=True)
    name = text(NAME_MAX)
    status = fields.String(required=True, validate=validate.OneOf(STEP_STATUSES))
    started_at = fields.String(data_key="startedAt", validate=[validate.Length(max=64), timestamp])
    ended_at = fields.String(data_key="endedAt", validate=[validate.Length(max=64), timestamp])


class MetricSchema(Schema):
    key = text(METRIC_KEY_MAX, required=True)
    value = fields.Float(required=True, allow_nan=False, validate=finite)

    @validates_schema(pass_original=True)
    def a_json_number(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        value = original.get("value") if isinstance(original, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("Not a valid number.", field_name="value")


class MetricEventSchema(EventSchema):
    metrics = fields.List(
        fields.Nested(MetricSchema), required=True, validate=validate.Length(min=1, max=METRICS_PER_EVENT_MAX)
    )
    step = count(validate=validate.Range(min=0))

    @validates_schema
    def keys_once(self, data: dict[str, Any], **kwargs: Any) -> None:
        names = [metric["key"] for metric in data["metrics"]]
        if len(set(names)) != len(names):
            raise ValidationError("Each key at most once per event.", field_name="metrics")


class ArtifactEventSchema(EventSchema):
    name = text(NAME_MAX, required=True)
    kind = fields.String(load_default="file", validate=validate.OneOf(ARTIFACT_KINDS))
    url = fields.String(
        required=True,
        validate=[
            validate.Length(max=URL_MAX),
            validate.URL(schemes=set(ARTIFACT_SCHEMES), require_tld=False),
        ],
    )
    mime = fields.String(validate=validate.Regexp(r"\A[\w.+-]{1,127}/[\w.+-]{1,127}\Z"))
    size = count(validate=validate.Range(min=0))


class AnnotationEventSchema(EventSchema):
    level = fields.String(load_default="notice", validate=validate.OneOf(ANNOTATION_LEVELS))
    message = text(MESSAGE_MAX, required=True)
    title = text(NAME_MAX)


class CompleteEventSchema(EventSchema):
    result = fields.String(
        load_default=None, allow_none=True, validate=[validate.Length(max=10_000), utf8_text]
    )


class FailedEventSchema(EventSchema):
    error = fields.String(
        load_default="Reported as failed", validate=[validate.Length(min=1, max=10_000), utf8_text]
    )


class CancelledEventSchema(EventSchema):
    error = fields.String(
        load_default=None, allow_none=True, validate=[validate.Length(max=10_000), utf8_text]
    )


EVENT_SCHEMAS: dict[str, Schema] = {
    EventType.STATUS: StatusEventSchema(),
    EventType.PROGRESS: ProgressEventSchema(),
    EventType.LOG: LogEventSchema(),
    EventType.STEP: StepEventSchema(),
    EventType.METRIC: MetricEventSchema(),
    EventType.ARTIFACT: ArtifactEventSchema(),
    EventType.ANNOTATION: AnnotationEventSchema(),
    EventType.COMPLETE: CompleteEventSchema(),
    EventType.FAILED: FailedEventSchema(),
    EventType.CANCELLED: CancelledEventSchema(),
}


def load_event(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["Each event must be an object."]})
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in EVENT_SCHEMAS:
        raise ValidationError({"type": [f"Must be one of: {', '.join(REPORTABLE)}."]})
    loaded: dict[str, Any] = EVENT_SCHEMAS[kind].load(data)
    return loaded


def load_events(payload: Any) -> list[dict[str, Any]]:
    """The events of a body, in order; :class:`ValidationError` with the offending fields
    (under ``events.<index>`` for a batch)."""
    if not (isinstance(payload, dict) and "events" in payload):
        return [load_event(payload)]
    if set(payload) != {"events"}:
        raise ValidationError({key: ["Unknown field."] for key in set(payload) - {"events"}})
    batch = payload["events"]
    if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH:
        raise ValidationError({"events": [f"Must be a list of 1 to {MAX_BATCH} events."]})
    events: list[dict[str, Any]] = []
    errors: dict[int, Any] = {}
    for index, data in enumerate(batch):
        try:
            events.append(load_event(data))
        except ValidationError as exc:
            errors[index] = exc.normalized_messages()  # type: ignore[no-untyped-call]
    if errors:
        raise ValidationError({"events": errors})
    for index, event in enumerate(events[:-1]):
        if EventType(event["type"]).terminal:
            raise ValidationError(
                {"events": {index: {"type": ["A final event must be the last of its batch."]}}}
            )
    keys = [event["key"] for event in events if "key" in event]
    if len(set(keys)) != len(keys):
        raise ValidationError({"events": ["Each key at most once per batch."]})
    return events
