"""Request and response schemas of the job API (marshmallow)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from jobprogress_core.model import BUILTIN_JOB_TYPES, JobStatus
from jobprogress_core.store import HistoryCursor

MAX_STEPS = 100
MAX_DURATION_SECONDS = 24 * 3600
MAX_TIME_LIMIT_SECONDS = 30 * 24 * 3600
MAX_PAGE = 100


def utf8_text(value: str) -> None:
    """JSON can carry lone surrogates (``"\\ud800"``); they cannot be stored or sent on."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Not valid Unicode text.") from None


class JobRequestSchema(Schema):
    """``POST /api/jobs`` body. Unknown fields are rejected."""

    type = fields.String(load_default="build", validate=validate.OneOf(BUILTIN_JOB_TYPES))

    def __init__(self, job_types: tuple[str, ...] = BUILTIN_JOB_TYPES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The accepted types are a setting (JOBPROGRESS_JOB_TYPES), not a constant.
        self.fields["type"].validators = [validate.OneOf(job_types)]
        self.fields["type"].load_default = job_types[0]

    name = fields.String(
        load_default=None, allow_none=True, validate=[validate.Length(min=1, max=200), utf8_text]
    )
    steps = fields.Integer(load_default=4, strict=True, validate=validate.Range(min=1, max=MAX_STEPS))
    duration_seconds = fields.Float(
        data_key="durationSeconds",
        load_default=120.0,
        validate=validate.Range(min=0.1, max=MAX_DURATION_SECONDS),
    )
    fail_at_step = fields.Integer(
        data_key="failAtStep",
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(min=1, max=MAX_STEPS),
        metadata={"description": "The step at which the simulated job fails; at most `steps`."},
    )

    time_limit_seconds = fields.Float(
        data_key="timeLimitSeconds",
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_TIME_LIMIT_SECONDS),
    )

    @validates_schema
    def fail_step_within_steps(self, data: dict[str, Any], **kwargs: Any) -> None:
        fail_at = data.get("fail_at_step")
        if fail_at is not None and fail_at > data["steps"]:
            raise ValidationError(f"Must be at most steps ({data['steps']}).", field_name="failAtStep")

    @validates_schema(pass_original=True)
    def no_booleans_as_numbers(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        if not isinstance(original, dict):
            return
        # Integer fields are strict already; a JSON true would otherwise load as 1.0.
        for key in ("durationSeconds", "timeLimitSeconds"):
            if isinstance(original.get(key), bool):
                raise ValidationError("Not a valid number.", field_name=key)


class HistoryCursorField(fields.Field[HistoryCursor]):
    """The ``before`` cursor of ``GET /api/jobs`` (as given in the previous page's ``next``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> HistoryCursor:
        try:
            return HistoryCursor.parse(str(value))
        except ValueError:
            raise ValidationError("Not a valid cursor: use the next link of the previous page.") from None


class JobListQuerySchema(Schema):
    """``GET /api/jobs`` query parameters."""

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE))
    before = HistoryCursorField(
        load_default=None,
        metadata={
            "pattern": "^[0-9]+-[0-9a-f]{32}$",
            "description": "The cursor of the previous page's next link",
        },
    )


class ShareRequestSchema(Schema):
    """``POST /api/jobs/{id}/share`` body (optional): how long the link works."""

    expires_in_seconds = fields.Integer(
        data_key="expiresInSeconds", strict=True, load_default=None, allow_none=True
    )

    def __init__(self, default_ttl: int, max_ttl: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_ttl = default_ttl
        self.fields["expires_in_seconds"].validators = [validate.Range(min=60, max=max_ttl)]

    @post_load
    def with_default(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data["expires_in_seconds"] is None:
            data["expires_in_seconds"] = self.default_ttl
        return data


# --- responses (the OpenAPI description; the views build these bodies) -------------------


class JobLinksSchema(Schema):
    self = fields.String(required=True)
    progress = fields.String(required=True)


class JobSchema(Schema):
    """A job's state, as ``GET /api/jobs/{id}`` answers it."""

    job_id = fields.String(data_key="jobId", required=True)
    type = fields.String(required=True)
    name = fields.String(required=True)
    params = fields.Dict(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in JobStatus]))
    progress = fields.Integer(required=True, validate=validate.Range(min=0, max=100))
    message = fields.String(required=True)
    step = fields.Integer(required=True)
    total_steps = fields.Integer(data_key="totalSteps", required=True)
    result = fields.String(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)
    created_at = fields.String(data_key="createdAt", required=True)
    started_at = fields.String(data_key="startedAt", required=True, allow_none=True)
    finished_at = fields.String(data_key="finishedAt", required=True, allow_none=True)
    worker = fields.String(required=True, allow_none=True)
    attempts = fields.Integer(required=True)
    last_event_id = fields.String(data_key="lastEventId", required=True, allow_none=True)
    cancel_requested = fields.Boolean(data_key="cancelRequested", required=True)
    links = fields.Nested(JobLinksSchema, required=True)


class JobSubmittedSchema(Schema):
    job_id = fields.String(data_key="jobId", required=True)
    status = fields.String(required=True, validate=validate.Equal("QUEUED"))
    links = fields.Nested(JobLinksSchema, required=True)


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema), required=True)
    next = fields.String(required=True, allow_none=True)


class ShareLinksSchema(Schema):
    page = fields.String(required=True)
    self = fields.String(required=True)
    progress = fields.String(required=True)


class ShareLinkSchema(Schema):
    job_id = fields.String(data_key="jobId", required=True)
    token = fields.String(required=True)
    expires_at = fields.String(data_key="expiresAt", required=True)
    links = fields.Nested(ShareLinksSchema, required=True)


class TokenSchema(Schema):
    token = fields.String(required=True)
    token_type = fields.String(data_key="tokenType", required=True, validate=validate.Equal("Bearer"))
    identity = fields.String(required=True)
    expires_at = fields.String(data_key="expiresAt", required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw(required=True, allow_none=True)


class ErrorSchema(Schema):
    """Every error: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorBodySchema, required=True)
