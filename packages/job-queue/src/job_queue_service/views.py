"""HTTP handlers of job-queue-service."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from aiohttp import hdrs, web
from marshmallow import Schema, ValidationError

from jobprogress_core.app_tokens import Scope
from jobprogress_core.deadlines import Deadlines
from jobprogress_core.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from jobprogress_core.limits import SUBMISSIONS, mint_identity
from jobprogress_core.logs import set_job_id
from jobprogress_core.metrics import count_finished
from jobprogress_core.model import EXTERNAL, EventType, Job, JobStatus, epoch_iso, valid_job_id
from jobprogress_core.redis import REDIS_ERRORS
from jobprogress_core.security import (
    SHARE_PARAMETER,
    TOKENS,
    Audience,
    Permission,
    authorize,
    check_credential,
    credential_of,
    identity_of,
    issue_reporter_token,
    require_identity,
)
from jobprogress_core.submissions import SUBMITTER
from jobprogress_core.web import JOB_QUEUE_SETTINGS as SETTINGS
from jobprogress_core.web import STORE

from .metrics import jobs_submitted
from .schemas import JobListQuerySchema, JobRequestSchema, ShareRequestSchema

logger = logging.getLogger(__name__)

REQUEST_SCHEMA = web.AppKey("request_schema", JobRequestSchema)
SHARE_SCHEMA = web.AppKey("share_schema", ShareRequestSchema)
DEADLINES = web.AppKey("deadlines", Deadlines)
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
    owner = await require_identity(request, Scope.SUBMIT)
    payload = await read_json(request)
    params = load(request.app[REQUEST_SCHEMA], payload, "Invalid job request")
    if params["runner"] == EXTERNAL:
        await request.app[SUBMISSIONS].hit(owner, "job submissions")
        return await submit_external(request, params, owner)
    job = Job.new(
        params["type"],
        {
            "steps": params["steps"],
            "durationSeconds": params["duration_seconds"],
            "failAtStep": params["fail_at_step"],
            "timeLimitSeconds": params["time_limit_seconds"],
        },
        owner=owner,
        name=params["name"],
        total_steps=params["steps"],
    )
    job_id = job.id
    set_job_id(job_id)
    # Counted against the owner's limit, stored, queued and indexed: one step on one Redis.
    await request.app[SUBMITTER].submit(job, {"status": JobStatus.QUEUED.value, "message": job.message})
    jobs_submitted(job.type).inc()
    logger.info("job %s submitted (type %s, %d steps)", job_id, job.type, job.total_steps)
    links = job_links(job_id)
    body = {"jobId": job_id, "status": JobStatus.QUEUED.value, "links": links}
    return web.json_response(body, status=202, headers={"Location": links["self"]})


async def submit_external(request: web.Request, params: dict[str, Any], owner: str) -> web.Response:
    """An external job: no worker runs it, it is running from now on, and its submitter
    reports its events with the ``reporterToken`` of the answer, until its time limit."""
    limit = params["time_limit_seconds"] or request.app[SETTINGS].external_time_limit
    message = "Running: reported by its submitter"
    job = Job.new(
        params["type"],
        {"timeLimitSeconds": limit},
        owner=owner,
        name=params["name"],
        total_steps=params["steps"] if params["steps_given"] else 0,
        message=message,
        runner=EXTERNAL,
    )
    job = replace(job, status=JobStatus.PROCESSING, started_at=job.created_at)
    set_job_id(job.id)
    store = request.app[STORE]
    await store.create(job, {"status": JobStatus.PROCESSING.value, "message": message, "runner": EXTERNAL})
    try:
        await request.app[DEADLINES].add(job.id, time.time() + limit)
    except REDIS_ERRORS:
        # Nothing would end it once its reporter stopped: end it now.
        with contextlib.suppress(*REDIS_ERRORS):
            await store.finish(job.id, EventType.FAILED, error="Could not be started: Redis was unavailable")
        raise
    token, _ = issue_reporter_token(request.app[TOKENS], job.id, ttl=limit)
    jobs_submitted(EXTERNAL).inc()
    logger.info("external job %s submitted (time limit %gs)", job.id, limit)
    links = {**job_links(job.id), "events": f"/api/jobs/{job.id}/events"}
    body = {"jobId": job.id, "status": job.status.value, "links": links, "reporterToken": token}
    return web.json_response(body, status=202, headers={"Location": links["self"]})


async def find_job(request: web.Request, permission: Permission) -> Job:
    """The job of the URL, if the caller may ``permission`` it; 404 as if it did not exist
    otherwise."""
    await check_credential(request)
    job_id = request.match_info["job_id"]
    job = await request.app[STORE].get(job_id) if valid_job_id(job_id) else None
    if job is None:
        raise NotFound(f"No job {job_id[:64]!r}")
    await authorize(request, permission, owner=job.owner, job_id=job.id)
    set_job_id(job.id)
    return job


def job_view(job: Job) -> dict[str, Any]:
    return {**job.to_json(), "links": job_links(job.id)}


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_view(await find_job(request, Permission.READ)))


async def list_jobs(request: web.Request) -> web.Response:
    """The caller's jobs, newest first: ``?limit=`` (1-100, default 20) and ``?before=``
    (the ``next`` cursor of the previous page)."""
    owner = await require_identity(request, Scope.READ)
    query = load(_list_schema, dict(request.query), "Invalid query")
    limit = query["limit"]
    jobs, cursor = await request.app[STORE].history(owner, limit=limit, before=query["before"])
    body: dict[str, Any] = {"jobs": [job_view(job) for job in jobs], "next": None}
    if cursor is not None:
        body["next"] = f"/api/jobs?{urlencode({'limit': limit, 'before': str(cursor)})}"
    return web.json_response(body)


async def cancel_job(request: web.Request) -> web.Response:
    """Ask for a job to be cancelled. A queued job ends at once; a running one at its next
    step. Repeating the request is harmless; a job that ended otherwise answers 409."""
    job = await find_job(request, Permission.CANCEL)
    store = request.app[STORE]
    if job.status is JobStatus.QUEUED and await store.finish(job.id, EventType.CANCELLED):
        count_finished(job.type, EventType.CANCELLED)
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


async def share_job(request: web.Request) -> web.Response:
    """A signed, expiring, read-only link to one job, for its owner to hand out: it grants
    the job's status and stream, never cancelling, and nothing about other jobs."""
    job = await find_job(request, Permission.SHARE)
    body = await request.read()
    payload = await read_json(request) if body.strip() else {}
    params = load(request.app[SHARE_SCHEMA], payload, "Invalid share request")
    # The subject is the job, not its owner: a viewer learns nothing about who shared it.
    ttl = params["expires_in_seconds"]
    token, expires = request.app[TOKENS].issue(Audience.SHARE, job.id, ttl=ttl, job=job.id)
    query = urlencode({SHARE_PARAMETER: token})
    links = {
        "page": f"/client/index.html?{urlencode({'job': job.id, SHARE_PARAMETER: token})}",
        "self": f"/api/jobs/{job.id}?{query}",
        "progress": f"/api/progress/{job.id}?{query}",
    }
    logger.info("job %s: share link issued, valid for %ds", job.id, ttl)
    return web.json_response(
        {"jobId": job.id, "token": token, "expiresAt": epoch_iso(expires), "links": links}, status=201
    )


async def issue_token(request: web.Request) -> web.Response:
    """A bearer token for the caller's identity (from the page's cookie, or a token about to
    expire), or for a new identity when the caller sends none."""
    identity = await identity_of(request)
    if (await credential_of(request)).app:
        # A token of ours would carry none of the app JWT's limits (its scope, its expiry).
        raise Forbidden("An app token is used as it is: it is not exchanged for a bearer token")
    if identity is None and hdrs.AUTHORIZATION in request.headers:
        # Not a new identity: the caller would lose sight of its jobs without noticing.
        raise Unauthorized("The bearer token is not valid or has expired; send none to get a new identity")
    created = identity is None
    if identity is None:
        identity = await mint_identity(request)
    token, expires = request.app[TOKENS].issue(Audience.API, identity, ttl=request.app[SETTINGS].token_ttl)
    logger.info("bearer token issued (%s identity)", "new" if created else "existing")
    body = {"token": token, "tokenType": "Bearer", "identity": identity, "expiresAt": epoch_iso(expires)}
    return web.json_response(body, status=201)
