"""The reporter API of external jobs: ``POST /api/jobs/{id}/events``.

An external job (``"runner": "external"``) is run by its submitter, which reports its events
here, the same events the worker writes, appended by the same kind of atomic step
(:mod:`jobprogress_core.reports`). Who may report is decided in one place,
:func:`reporter_of`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from marshmallow import ValidationError

from jobprogress_core.app_tokens import Scope
from jobprogress_core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from jobprogress_core.event_data import EventLimit, annotation_data, artifact_data, metric_data, step_data
from jobprogress_core.limits import RateLimit
from jobprogress_core.logs import set_job_id
from jobprogress_core.metrics import count_finished
from jobprogress_core.model import EXTERNAL, TERMINAL_STATUS_OF, EventType, Job, JobStatus, now_iso
from jobprogress_core.reports import Report, Reports
from jobprogress_core.security import (
    TOKENS,
    bearer_token,
    credential_of,
    reporter_token_job,
    require_identity,
)
from jobprogress_core.web import STORE

from .report_schemas import load_events
from .views import DEADLINES, read_json

__all__ = ["REPORTS", "REPORT_LIMIT", "report_events", "reporter_of", "to_reports"]

logger = logging.getLogger(__name__)

REPORTS = web.AppKey("reports", Reports)
REPORT_LIMIT = web.AppKey("report_limit", RateLimit)

PROCESSING = JobStatus.PROCESSING.value


async def reporter_of(request: web.Request, job_id: str) -> Job:
    """The external job ``job_id``, if the request may report its events; else an error
    that tells nothing about any other job.

    Accepted credentials: ``Authorization: Bearer <reporterToken>``, the token the job's
    ``POST /api/jobs`` answered (for this job only, until its time limit); or an app JWT of
    the job's owner with scope ``report`` (another user's job is 404 to it). No header: 401;
    a forged, expired or other kind of token (a bearer token of an identity, a share link):
    401; a reporter token of another job: 403, decided before the job is looked up. A job
    that is gone (its retention passed) is 404."""
    # First the credential, then the job, looked up once: with an app JWT it must be its
    # user's (the product's own token for its user, with scope report); a reporter token
    # names the job itself.
    owner: str | None = None
    if (await credential_of(request)).app:
        owner = await require_identity(request, Scope.REPORT)
    else:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized("Send the job's reporter token: 'Authorization: Bearer <reporterToken>'")
        if reporter_token_job(request.app[TOKENS], token) != job_id:
            raise Forbidden("This reporter token is for another job", details={"reason": "other_job"})
    job = await request.app[STORE].get(job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise NotFound(f"No job {job_id[:64]!r}")
    if job.runner != EXTERNAL:
        raise Forbidden("Only external jobs take reported events", details={"reason": "not_external"})
    return job


def to_reports(job: Job, events: Sequence[dict[str, Any]]) -> list[Report]:
    """The appends of validated events, with the data and job fields the worker writes for
    each type; progress, step and message carry on from the job and earlier events."""
    progress, step, total, message = job.progress, job.step, job.total_steps, job.message
    reports: list[Report] = []
    for event in events:
        kind = EventType(event["type"])
        data: dict[str, Any]
        changes: dict[str, str | int | None] = {}
        if kind is EventType.STATUS:
            message = event["message"]
            data = {"status": PROCESSING, "message": message}
            changes = {"status": PROCESSING, "message": message}
        elif kind is EventType.PROGRESS:
            step, total = event.get("step", step), event.get("total_steps", total)
            progress = event["progress"] if "progress" in event else round(step * 100 / total)
            message = event.get("message", message)
            data = {
                "status": PROCESSING,
                "progress": progress,
                "message": message,
                "step": step,
                "totalSteps": total,
            }
            if "eta_seconds" in event:
                data["etaSeconds"] = event["eta_seconds"]
            changes = {"progress": progress, "message": message, "step": step, "total_steps": total}
        elif kind is EventType.LOG:
            data = {"level": event["level"], "line": event["line"]}
        elif kind is EventType.STEP:
            data = step_data(
                event["step_id"],
                event["status"],
                name=event.get("name"),
                started_at=event.get("started_at"),
                ended_at=event.get("ended_at"),
            )
        elif kind is EventType.METRIC:
            values = {metric["key"]: metric["value"] for metric in event["metrics"]}
            data = metric_data(values, step=event.get("step"))
        elif kind is EventType.ARTIFACT:
            data = artifact_data(
                event["name"],
                url=event["url"],
                kind=event["kind"],
                mime=event.get("mime"),
                size=event.get("size"),
            )
        elif kind is EventType.ANNOTATION:
            data = annotation_data(event["level"], event["message"], title=event.get("title"))
        else:
            status = TERMINAL_STATUS_OF[kind].value
            changes = {"status": status, "finished_at": now_iso()}
            if kind is EventType.COMPLETE:
                data = {"status": status, "progress": 100, "result": event["result"]}
                changes |= {"progress": 100, "result": event["result"], "message": "Completed"}
            else:
                data = {"status": status, "progress": progress, "error": event["error"]}
                changes |= {"error": event["error"], "message": status.capitalize()}
        reports.append(Report(kind.value, data, changes, event.get("key")))
    return reports


async def report_events(request: web.Request) -> web.Response:
    """Append the reported events (one, or ``{"events": [...]}``) in order: 200 with the IDs
    appended, the keys that were duplicates, and whether cancellation was requested."""
    job = await reporter_of(request, request.match_info["job_id"])
    set_job_id(job.id)
    await request.app[REPORT_LIMIT].hit(job.id, "reports for this job")
    try:
        events = load_events(await read_json(request))
    except ValidationError as exc:
        details = exc.normalized_messages()  # type: ignore[no-untyped-call]
        raise ValidationFailed("Invalid events", details=details) from None
    reports = to_reports(job, events)
    deadlines = request.app[DEADLINES]
    deadline = await deadlines.deadline(job.id)
    keys_ttl = int(max(0.0, (deadline or 0) - time.time())) + request.app[STORE].retention_seconds
    try:
        outcome = await request.app[REPORTS].append(job.id, reports, keys_ttl=keys_ttl)
    except EventLimit as exc:
        raise ValidationFailed(str(exc), details={"type": exc.kind, "most": exc.most}) from None
    if outcome is None:
        raise NotFound(f"No job {job.id}")
    if outcome.ended:
        ended = await request.app[STORE].get(job.id)
        status = ended.status.value if ended else "gone"
        raise Conflict(f"Job {job.id} has already ended: {status}", details={"status": status})
    last = reports[-1]
    if EventType(last.type).terminal and outcome.ids[-1] is not None:
        await deadlines.remove(job.id)
        count_finished(EXTERNAL, EventType(last.type))
        logger.info("job %s ended by its reporter: %s", job.id, last.type)
    duplicates = [report.key for report, entry in zip(reports, outcome.ids, strict=True) if entry is None]
    body = {
        "jobId": job.id,
        "ids": outcome.appended,
        "duplicates": duplicates,
        "cancelRequested": outcome.cancel_requested,
    }
    return web.json_response(body)
