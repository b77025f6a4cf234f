"""The OpenAPI 3.1 description of the job API, built from the marshmallow schemas
(apispec's MarshmallowPlugin) and served at ``GET /api/openapi.json``."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from jobprogress_core.security import IDENTITY_COOKIE, SHARE_PARAMETER
from jobprogress_core.settings import JobQueueSettings

from .report_schemas import EVENT_SCHEMAS, MAX_BATCH
from .schemas import (
    ErrorSchema,
    HistoryCursorField,
    JobListQuerySchema,
    JobListSchema,
    JobRequestSchema,
    JobSchema,
    JobSubmittedSchema,
    ReportedSchema,
    ShareLinkSchema,
    ShareRequestSchema,
    TokenSchema,
)

OPENAPI = web.AppKey("openapi", dict)

SIGNED_IN: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]
JOB_ID = {
    "name": "jobId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
SHARE = {
    "name": SHARE_PARAMETER,
    "in": "query",
    "required": False,
    "description": "A share link's token: reading this one job without being its owner.",
    "schema": {"type": "string"},
}


def error(description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": "Error"}},
    }
    if headers:
        response["headers"] = {name: {"schema": {"type": kind}} for name, kind in headers.items()}
    return response


def body(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": error("Malformed JSON"),
    "401": error("No identity (send a bearer token, or use the page)", **{"WWW-Authenticate": "string"}),
    "403": error("Cross-site request, or a share link that is forged, expired or read-only"),
    "404": error("No such job, or not the caller's"),
    "413": error("Body over 64 KiB"),
    "422": error("Invalid fields; details name each"),
    "429": error("A limit was reached", **{"Retry-After": "integer"}),
    "503": error("Redis is unavailable", **{"Retry-After": "integer"}),
}


def errors(*statuses: int) -> dict[str, Any]:
    return {str(status): ERRORS[str(status)] for status in statuses}


def build_spec(settings: JobQueueSettings) -> dict[str, Any]:
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="jobprogress job API",
        version=version("jobprogress-job-queue"),
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={
            "description": (
                "Submit long-running jobs, read their state, cancel and share them. Live progress "
                "is streamed by progress-service at GET /api/progress/{jobId} (Server-Sent Events)."
            )
        },
    )
    marshmallow.map_to_openapi_type(HistoryCursorField, "string", None)  # type: ignore[no-untyped-call]
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("cookie", {"type": "apiKey", "in": "cookie", "name": IDENTITY_COOKIE})
    spec.components.schema("JobRequest", schema=JobRequestSchema(settings.job_types))
    spec.components.schema(
        "ShareRequest", schema=ShareRequestSchema(settings.share_ttl, settings.share_max_ttl)
    )
    for name, schema in {
        "Job": JobSchema,
        "JobSubmitted": JobSubmittedSchema,
        "JobList": JobListSchema,
        "ShareLink": ShareLinkSchema,
        "Token": TokenSchema,
        "Reported": ReportedSchema,
        "Error": ErrorSchema,
    }.items():
        spec.components.schema(name, schema=schema)
    events = add_event_schemas(spec)

    spec.path(
        path="/api/jobs",
        operations={
            "post": {
                "operationId": "submitJob",
                "summary": "Submit a job",
                "security": SIGNED_IN,
                "requestBody": {"required": True, "content": {"application/json": {"schema": "JobRequest"}}},
                "responses": {
                    "202": {
                        **body("JobSubmitted", "Queued"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **errors(400, 401, 403, 413, 422, 429, 503),
                },
            },
            "get": {
                "operationId": "listJobs",
                "summary": "The caller's jobs, newest first",
                "security": SIGNED_IN,
                "parameters": [{"in": "query", "schema": JobListQuerySchema}],
                "responses": {"200": body("JobList", "A page of jobs"), **errors(401, 422, 503)},
            },
        },
    )
    spec.path(
        path="/api/jobs/{jobId}",
        operations={
            "get": {
                "operationId": "getJob",
                "summary": "A job's state",
                "security": SIGNED_IN,
                "parameters": [JOB_ID, SHARE],
                "responses": {"200": body("Job", "The job"), **errors(403, 404, 503)},
            }
        },
    )
    spec.path(
        path="/api/jobs/{jobId}/cancel",
        operations={
            "post": {
                "operationId": "cancelJob",
                "summary": "Ask for a job to be cancelled (idempotent)",
                "security": SIGNED_IN,
                "parameters": [JOB_ID],
                "responses": {
                    "200": body("Job", "Cancelled"),
                    "202": body("Job", "Running: it stops at its next check"),
                    "409": error("The job already ended otherwise"),
                    **errors(403, 404, 503),
                },
            }
        },
    )
    spec.path(
        path="/api/jobs/{jobId}/share",
        operations={
            "post": {
                "operationId": "shareJob",
                "summary": "A signed, expiring, read-only link to one job (owner only)",
                "security": SIGNED_IN,
                "parameters": [JOB_ID],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": "ShareRequest"}},
                },
                "responses": {"201": body("ShareLink", "The link"), **errors(400, 403, 404, 413, 422, 503)},
            }
        },
    )
    spec.path(
        path="/api/jobs/{jobId}/events",
        operations={
            "post": {
                "operationId": "reportEvents",
                "summary": "Append events to an external job, in order (its reporter only)",
                "description": (
                    "Send 'Authorization: Bearer <reporterToken>', the token the job's submission "
                    "answered: for this job only, write-only, expiring with the job's time limit. "
                    f'One event, or {{"events": [...]}} of at most {MAX_BATCH}, appended in order '
                    "in one atomic step. An event whose key was appended before is skipped: retries "
                    "are safe. cancelRequested in the answer: end the job with a cancelled event."
                ),
                "security": [{"bearer": []}],
                "parameters": [JOB_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": events}}},
                "responses": {
                    "200": body("Reported", "Appended (or skipped as duplicates)"),
                    "401": error("No reporter token, or one forged, expired or of another kind"),
                    "403": error("A reporter token of another job"),
                    "404": error("The job is gone"),
                    "409": error("The job has ended"),
                    **errors(400, 413, 422, 429, 503),
                },
            }
        },
    )
    add_push_paths(spec)
    spec.path(
        path="/api/tokens",
        operations={
            "post": {
                "operationId": "issueToken",
                "summary": "A bearer token for the caller's identity, or for a new one",
                "security": [*SIGNED_IN, {}],
                "responses": {"201": body("Token", "The token"), **errors(401, 403, 429, 503)},
            }
        },
    )
    return spec.to_dict()


PUSH_OFF = error("Web Push is not enabled on this server (no VAPID key): code push_disabled")
SUBSCRIPTION = {
    "type": "object",
    "description": "A browser's PushSubscription (PushSubscription.toJSON()).",
    "required": ["endpoint", "keys"],
    "properties": {
        "endpoint": {"type": "string", "description": "The push service's URL: https, a public host"},
        "expirationTime": {"type": ["number", "null"]},
        "keys": {
            "type": "object",
            "required": ["p256dh", "auth"],
            "properties": {
                "p256dh": {"type": "string", "description": "The browser's P-256 key, base64url"},
                "auth": {"type": "string", "description": "16 bytes, base64url"},
            },
        },
    },
}


def add_push_paths(spec: APISpec) -> None:
    """The Web Push routes (``push_views.py``): the server's key, and the caller's
    subscriptions, to which the ends of their jobs are pushed."""
    spec.path(
        path="/api/push/key",
        operations={
            "get": {
                "operationId": "pushKey",
                "summary": "The VAPID public key to subscribe with, or that push is off",
                "security": [],
                "responses": {
                    "200": {
                        "description": "enabled, and the key (base64url) when it is",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["enabled"],
                                    "properties": {
                                        "enabled": {"type": "boolean"},
                                        "publicKey": {"type": "string"},
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
    )
    json_body = {"required": True, "content": {"application/json": {"schema": SUBSCRIPTION}}}
    endpoint_only = {
        "type": "object",
        "required": ["endpoint"],
        "properties": {"endpoint": {"type": "string"}},
    }
    spec.path(
        path="/api/push/subscriptions",
        operations={
            "post": {
                "operationId": "subscribePush",
                "summary": "Push the ends of the caller's jobs to this browser",
                "security": SIGNED_IN,
                "requestBody": json_body,
                "responses": {
                    "201": {
                        "description": "Kept for JOBPROGRESS_PUSH_SUBSCRIPTION_TTL_SECONDS (renewed by each)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["subscribed", "id"],
                                    "properties": {
                                        "subscribed": {"type": "boolean"},
                                        "id": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "404": PUSH_OFF,
                    **errors(400, 401, 403, 413, 422, 503),
                },
            },
            "delete": {
                "operationId": "unsubscribePush",
                "summary": "Stop pushing to this endpoint (idempotent)",
                "security": SIGNED_IN,
                "requestBody": {"required": True, "content": {"application/json": {"schema": endpoint_only}}},
                "responses": {
                    "200": {
                        "description": "Whether it was kept",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["removed"],
                                    "properties": {"removed": {"type": "boolean"}},
                                }
                            }
                        },
                    },
                    "404": PUSH_OFF,
                    **errors(400, 401, 403, 413, 422, 503),
                },
            },
        },
    )


def add_event_schemas(spec: APISpec) -> dict[str, Any]:
    """A component per reported event type (``StatusEvent``…) and ``EventBatch``; the schema
    of the body of ``POST /api/jobs/{id}/events``."""
    refs = []
    for kind, schema in EVENT_SCHEMAS.items():
        name = f"{kind.capitalize()}Event"
        spec.components.schema(name, schema=type(schema))
        spec.components.schemas[name]["properties"]["type"] = {"type": "string", "enum": [kind]}
        refs.append({"$ref": f"#/components/schemas/{name}"})
    batch = {
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {"oneOf": refs},
                "description": "In order; a final event (complete, failed, cancelled) only last; keys unique",
            }
        },
    }
    spec.components.schema("EventBatch", component=batch)
    return {"oneOf": [*refs, {"$ref": "#/components/schemas/EventBatch"}]}


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])
