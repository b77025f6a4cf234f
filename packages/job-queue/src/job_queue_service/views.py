"""HTTP handlers of job-queue-service."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from marshmallow import Schema, ValidationError

from jobprogress_core.errors import BadRequest, Conflict, NotFound, ValidationFailed
from jobprogress_core.model import EventType, Job, JobStatus, valid_job_id
from jobprogress_core.redis import REDIS_ERRORS
from jobprogress_core.web import STORE

from .schemas import JobListQuerySchema, JobRequestSchema

logger = logging.getLogger(__name__)

#: Until identities arrive (cookie / bearer token), every job belongs to this owner.
ANONYMOUS = "anonymous"

REQUEST_SCHEMA = web.AppKey("request_schema", JobRequestSchema)
_list_schema = JobListQuerySchema()


async def read_json(request: web.Request) -> Any:
    body = await request.read()
    if not body.strip():
        raise BadRequest("Request body is empty: send a JSON object")
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest("Request body is nested too deeply") from None
    except ValueError as exc:  # malformed JSON, bad encoding, numbers past Python's digit limit
        raise BadRequest("Request body is not valid JSON", details={"reason": str(exc)[:200]}) from None


def load(schema: Schema, data: Any, message: str) -> dict[str, Any]:
    """``schema.load``, its errors answered 422 with the offending fields."""
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        details = exc.normalized_messages()  # type: ignore[no-untyped-call]
        raise ValidationFailed(message, details=details) from None
    return loaded


def job_links(job_id: str) -> dict[str, str]:
    return {"self": f"/api/jobs/{job_id}", "progress": f"/api/progress/{job_id}"}


async def submit_job(request: web.Request) -> web.Response:
    payload = await read_json(request)
    params = load(request.app[REQUEST_SCHEMA], payload, "Invalid job request")

    job = Job.new(
        params["type"],
        {
            "steps": params["steps"],
            "durationSeconds": params["duration_seconds"],
            "failAtStep": params["fail_at_step"],
            "timeLimitSeconds": params["time_limit_seconds"],
        },
        owner=owner_of(request),
        name=params["name"],
        total_steps=params["steps"],
    )
    job_id = job.id
    store = request.app[STORE]
    await store.create(job, {"status": JobStatus.QUEUED.value, "message": job.message})
    try:
        await store.enqueue(job_id)
    except REDIS_ERRORS:
        # Stored but not queued: end the job rather than leave it waiting for ever.
        with contextlib.suppress(*REDIS_ERRORS):
            await store.finish(job_id, EventType.FAILED, error="Could not be queued: Redis was unavailable")
        raise
    logger.info("job %s submitted (type %s, %d steps)", job_id, job.type, job.total_steps)
    links = job_links(job_id)
    body = {"jobId": job_id, "status": JobStatus.QUEUED.value, "links": links}
    return web.json_response(body, status=202, headers={"Location": links["self"]})


async def find_job(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    job = await request.app[STORE].get(job_id) if valid_job_id(job_id) else None
    if job is None or job.owner != owner_of(request):
        raise NotFound(f"No job {job_id[:64]!r}")
    return job


def owner_of(request: web.Request) -> str:
    return ANONYMOUS


def job_view(job: Job) -> dict[str, Any]:
    return {**job.to_json(), "links": job_links(job.id)}


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_view(await find_job(request)))


async def list_jobs(request: web.Request) -> web.Response:
    """The caller's jobs, newest first: ``?limit=`` (1-100, default 20) and ``?before=``
    (the ``next`` cursor of the previous page)."""
    query = load(_list_schema, dict(request.query), "Invalid query")
    limit = query["limit"]
    jobs, cursor = await request.app[STORE].history(owner_of(request), limit=limit, before=query["before"])
    body: dict[str, Any] = {"jobs": [job_view(job) for job in jobs], "next": None}
    if cursor is not None:
        body["next"] = f"/api/jobs?{urlencode({'limit': limit, 'before': str(cursor)})}"
    return web.json_response(body)


async def cancel_job(request: web.Request) -> web.Response:
    """Ask for a job to be cancelled. A queued job ends at once; a running one at its next
    step. Repeating the request is harmless; a job that ended otherwise answers 409."""
    job = await find_job(request)
    store = request.app[STORE]
    if job.status is JobStatus.QUEUED:
        await store.finish(job.id, EventType.CANCELLED)
    elif job.status is JobStatus.PROCESSING and not job.cancel_requested:
        await store.append(
            job.id, EventType.LOG, {"level": "warning", "line": "Cancellation requested"}, cancel_requested=1
        )
    job = await store.get(job.id) or job
    if job.status.terminal and job.status is not JobStatus.CANCELLED:
        raise Conflict(
            f"Job {job.id} has already ended: {job.status.value}", details={"status": job.status.value}
        )
    logger.info("job %s: cancellation requested (now %s)", job.id, job.status.value)
    status = 200 if job.status is JobStatus.CANCELLED else 202
    return web.json_response(job_view(job), status=status)
