"""Request and response schemas of the job API (marshmallow)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from jobprogress_core.model import (
    BUILTIN_JOB_TYPES,
    COUNT,
    EXTERNAL,
    FLAG,
    JOB_WIRE,
    JSON_LIST,
    JSON_OBJECT,
    OPTIONAL_TEXT,
    RUNNER,
    STATUS,
    TEXT,
    Codec,
    JobStatus,
)
from jobprogress_core.store import HistoryCursor

MAX_STEPS = 100
MAX_DURATION_SECONDS = 24 * 3600
MAX_TIME_LIMIT_SECONDS = 30 * 24 * 3600
MAX_PAGE = 100
JOB_TYPE_PATTERN = r"\A[a-z][a-z0-9_.-]{0,63}\Z"
RUNNERS = ("worker", EXTERNAL)


def utf8_text(value: str) -> None:
    """JSON can carry lone surrogates (``"\\ud800"``); they cannot be stored or sent on."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Not valid Unicode text.") from None


class JobRequestSchema(Schema):
    """``POST /api/jobs`` body. Unknown fields are rejected."""

    type = fields.String(
        load_default=None,
        validate=validate.Regexp(JOB_TYPE_PATTERN, error="Must be a name like build or data-import."),
        metadata={
            "description": "One of the accepted types for a worker's job (the first is the default); "
            "any name for an external one (default external)."
        },
    )
    runner = fields.String(
        load_default="worker",
        validate=validate.OneOf(RUNNERS),
        metadata={"description": "external: no worker runs the job; its submitter reports its events."},
    )

    def __init__(self, job_types: tuple[str, ...] = BUILTIN_JOB_TYPES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The accepted types are a setting (JOBPROGRESS_JOB_TYPES), not a constant.
        self.job_types = job_types

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

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def type_of_runner(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        if not isinstance(original, dict):
            return
        if data.get("runner") == EXTERNAL:
            worker_only = sorted(set(original) & {"durationSeconds", "failAtStep"})
            if worker_only:
                raise ValidationError({key: ["Only for jobs a worker runs."] for key in worker_only})
        elif data.get("type") is not None and data["type"] not in self.job_types:
            raise ValidationError(f"Must be one of: {', '.join(self.job_types)}.", field_name="type")

    @post_load(pass_original=True)
    def default_type(self, data: dict[str, Any], original: Any, **kwargs: Any) -> dict[str, Any]:
        if data["type"] is None:
            data["type"] = EXTERNAL if data["runner"] == EXTERNAL else self.job_types[0]
        data["steps_given"] = "steps" in original
        return data

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


class SubmittedLinksSchema(JobLinksSchema):
    events = fields.String(metadata={"description": "External jobs: where the reporter posts events."})


#: The marshmallow field of each way a job field is written (:data:`JOB_WIRE`).
JOB_FIELD_TYPES: dict[Codec, Callable[..., fields.Field[Any]]] = {
    TEXT: fields.String,
    OPTIONAL_TEXT: partial(fields.String, allow_none=True),
    COUNT: fields.Integer,
    FLAG: fields.Boolean,
    JSON_OBJECT: fields.Dict,
    JSON_LIST: partial(fields.List, fields.Dict()),
    STATUS: fields.String,
    RUNNER: fields.String,
}
#: What the description says of some job fields beyond their type.
JOB_FIELD_VALIDATORS = {
    "status": validate.OneOf([s.value for s in JobStatus]),
    "progress": validate.Range(min=0, max=100),
    "runner": validate.OneOf(["worker", "external"]),
}


def job_fields() -> dict[str, fields.Field[Any]]:
    """The fields of a job's JSON view, as the model declares them (:data:`JOB_WIRE`)."""
    return {
        name: JOB_FIELD_TYPES[spec.codec](
            data_key=spec.json, required=True, validate=JOB_FIELD_VALIDATORS.get(name)
        )
        for name, spec in JOB_WIRE.items()
        if spec.json is not None
    }


#: A job's state, as ``GET /api/jobs/{id}`` answers it.
JobSchema = Schema.from_dict(
    {**job_fields(), "links": fields.Nested(JobLinksSchema, required=True)}, name="JobSchema"
)


class JobSubmittedSchema(Schema):
    job_id = fields.String(data_key="jobId", required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(["QUEUED", "PROCESSING"]),
        metadata={"description": "QUEUED for a worker; an external job runs (PROCESSING) at once."},
    )
    links = fields.Nested(SubmittedLinksSchema, required=True)
    reporter_token = fields.String(
        data_key="reporterToken",
        metadata={
            "description": "External jobs only: the bearer token of POST /api/jobs/{id}/events, for "
            "this job only, write-only, expiring with the job's time limit."
        },
    )


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


class ReportedSchema(Schema):
    """The answer of ``POST /api/jobs/{id}/events``."""

    job_id = fields.String(data_key="jobId", required=True)
    ids = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "Stream IDs of the events appended, in order"},
    )
    duplicates = fields.List(
        fields.String(), required=True, metadata={"description": "Keys of events appended before: skipped"}
    )
    cancel_requested = fields.Boolean(
        data_key="cancelRequested",
        required=True,
        metadata={"description": "The owner asked to cancel: end the job with a cancelled event"},
    )


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw(required=True, allow_none=True)


class ErrorSchema(Schema):
    """Every error: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorBodySchema, required=True)
