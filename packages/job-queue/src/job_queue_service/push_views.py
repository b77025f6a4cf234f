"""The Web Push API: the VAPID public key a page subscribes with, and the caller's
subscriptions (``POST``/``DELETE /api/push/subscriptions``). With no VAPID key set, push is
off: the key endpoint says so, the others answer 404 ``push_disabled``."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from jobprogress_core.app_tokens import Scope
from jobprogress_core.errors import NotFound, ValidationFailed
from jobprogress_core.security import require_identity
from jobprogress_core.web import JOB_QUEUE_SETTINGS as SETTINGS

from .push_sender import PUSH, SUBSCRIPTIONS
from .push_subscriptions import SubscriptionError, check_endpoint, parse_subscription
from .views import read_json

logger = logging.getLogger(__name__)


class PushDisabled(NotFound):
    code = "push_disabled"


def _require_push(request: web.Request) -> None:
    if PUSH not in request.app:
        raise PushDisabled("Web Push is not enabled on this server (no VAPID key is configured)")


async def push_key(request: web.Request) -> web.Response:
    """``{"enabled": true, "publicKey": <base64url>}``, or ``{"enabled": false}``."""
    if PUSH not in request.app:
        return web.json_response({"enabled": False})
    return web.json_response({"enabled": True, "publicKey": request.app[PUSH].vapid.public_key})


async def subscribe(request: web.Request) -> web.Response:
    """Keep the caller's ``PushSubscription``: its jobs' ends are pushed to it from now on."""
    _require_push(request)
    identity = await require_identity(request, Scope.READ)
    payload = await read_json(request)
    try:
        subscription = parse_subscription(payload, development=not request.app[SETTINGS].production)
    except SubscriptionError as exc:
        raise ValidationFailed("Invalid push subscription", details=exc.fields) from None
    await request.app[SUBSCRIPTIONS].add(identity, subscription)
    logger.info("push subscription added")
    return web.json_response({"subscribed": True, "id": subscription.id}, status=201)


async def unsubscribe(request: web.Request) -> web.Response:
    """Forget one of the caller's subscriptions, named by its ``endpoint`` (idempotent)."""
    _require_push(request)
    identity = await require_identity(request, Scope.READ)
    payload: Any = await read_json(request)
    try:
        endpoint = check_endpoint(
            payload.get("endpoint") if isinstance(payload, dict) else None,
            development=not request.app[SETTINGS].production,
        )
    except ValueError as exc:
        raise ValidationFailed("Invalid push subscription", details={"endpoint": [str(exc)]}) from None
    removed = await request.app[SUBSCRIPTIONS].remove(identity, endpoint)
    return web.json_response({"removed": removed})


def add_push_routes(app: web.Application) -> None:
    app.router.add_get("/api/push/key", push_key, name="push_key")
    app.router.add_post("/api/push/subscriptions", subscribe, name="push_subscribe")
    app.router.add_delete("/api/push/subscriptions", unsubscribe, name="push_unsubscribe")
