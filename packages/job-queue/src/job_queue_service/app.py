"""job-queue-service application factory."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from jobprogress_core.limits import identity_limit_ctx, submission_limit_ctx
from jobprogress_core.registration import consul_ctx
from jobprogress_core.settings import JobQueueSettings
from jobprogress_core.submissions import submitter_ctx
from jobprogress_core.web import collector_ctx, create_base_app

from . import reporting, views
from .metrics import setup_queue_metrics
from .openapi import OPENAPI, build_spec, openapi_json
from .push_sender import push_ctx
from .push_views import add_push_routes
from .schemas import JobRequestSchema, ShareRequestSchema
from .sweeper import external_ctx

SERVICE: Final = "job-queue-service"


def create_app(settings: JobQueueSettings) -> web.Application:
    app = create_base_app(settings)
    app[views.REQUEST_SCHEMA] = JobRequestSchema(settings.job_types)
    app[views.SHARE_SCHEMA] = ShareRequestSchema(settings.share_ttl, settings.share_max_ttl)
    app.router.add_post("/api/jobs", views.submit_job, name="submit_job")
    app.router.add_get("/api/jobs", views.list_jobs, name="list_jobs")
    app.router.add_get("/api/jobs/{job_id}", views.get_job, name="get_job")
    app.router.add_post("/api/jobs/{job_id}/cancel", views.cancel_job, name="cancel_job")
    app.router.add_post("/api/jobs/{job_id}/share", views.share_job, name="share_job")
    app.router.add_post("/api/jobs/{job_id}/events", reporting.report_events, name="report_events")
    app.router.add_post("/api/tokens", views.issue_token, name="issue_token")
    add_push_routes(app)
    setup_queue_metrics(app)
    app[OPENAPI] = build_spec(settings)
    app.router.add_get("/api/openapi.json", openapi_json, name="openapi")
    app.cleanup_ctx.append(identity_limit_ctx)
    app.cleanup_ctx.append(submission_limit_ctx)
    app.cleanup_ctx.append(submitter_ctx)
    app.cleanup_ctx.append(external_ctx)
    app.cleanup_ctx.append(push_ctx)
    app.cleanup_ctx.append(consul_ctx)
    app.cleanup_ctx.append(collector_ctx)
    return app
