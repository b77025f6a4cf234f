"""The page's job calls (``/api/jobs…``, ``/api/tokens``) on the page's own origin,
forwarded to a healthy job-queue-service instance found in Consul. No address is
configured: a lost instance is skipped and the next passing one is tried.

The caller's identity travels as a bearer token minted here for a minute (the cookie and
``Origin`` stay behind: this service has already applied the same-origin rule to them)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import hdrs, web

from jobprogress_core.consul_client import CONSUL_ERRORS
from jobprogress_core.discovery import ServiceLookup
from jobprogress_core.errors import ServiceUnavailable
from jobprogress_core.limits import mint_identity
from jobprogress_core.security import TOKENS, Audience, credential_of, identity_of
from jobprogress_core.web import REQUEST_ID_HEADER, REQUEST_ID_KEY, SETTINGS

logger = logging.getLogger(__name__)

JOB_QUEUE_SERVICE = "job-queue-service"
LOOKUP = web.AppKey("job_queue_lookup", ServiceLookup)
CLIENT = web.AppKey("forward_client", aiohttp.ClientSession)

REQUEST_HEADERS = ("Content-Type", "Accept")
#: Lifetime of the bearer token a forwarded call carries.
FORWARD_TOKEN_SECONDS = 60
RESPONSE_HEADERS = ("Content-Type", "Location", "Retry-After", "Allow", "WWW-Authenticate")
#: With no passing instance, how long a call waits for Consul to name one (one starting up).
INSTANCE_WAIT_SECONDS = 2.0


async def forward_ctx(app: web.Application) -> AsyncIterator[None]:
    lookup = ServiceLookup(app[SETTINGS], JOB_QUEUE_SERVICE)
    app[LOOKUP] = lookup
    lookup.start()
    timeout = aiohttp.ClientTimeout(total=15, connect=2)
    try:
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            app[CLIENT] = session
            yield
    finally:
        await lookup.stop()


async def forward_job_call(request: web.Request) -> web.Response:
    lookup = request.app[LOOKUP]
    try:
        instances = await lookup.rotation(wait=INSTANCE_WAIT_SECONDS)
    except CONSUL_ERRORS as exc:
        logger.warning("consul lookup of %s failed: %s", JOB_QUEUE_SERVICE, exc)
        raise ServiceUnavailable("Service discovery is unavailable, try again shortly") from None
    if not instances:
        raise ServiceUnavailable(f"No healthy {JOB_QUEUE_SERVICE} instance, try again shortly")
    body = await request.read()
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    headers[REQUEST_ID_HEADER] = request[REQUEST_ID_KEY]  # one id for the call on both services
    identity = await identity_of(request)
    if (await credential_of(request)).app:
        # The product's token goes on as it is, its scope and expiry with it.
        identity = None
    if identity is None and request.path == "/api/tokens" and hdrs.AUTHORIZATION not in request.headers:
        # A new identity is minted here, where the client's address is known (within the
        # limit per address), not behind this hop.
        identity = await mint_identity(request)
    if identity is not None:
        token, _ = request.app[TOKENS].issue(Audience.API, identity, ttl=FORWARD_TOKEN_SECONDS)
        headers[hdrs.AUTHORIZATION] = f"Bearer {token}"
    elif hdrs.AUTHORIZATION in request.headers:  # not valid here: job-queue-service says why
        headers[hdrs.AUTHORIZATION] = request.headers[hdrs.AUTHORIZATION]
    forwarded_for = request.headers.get("X-Forwarded-For")
    peer = request.remote or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    for instance in instances:
        url = f"{instance.url}{request.rel_url}"
        try:
            async with request.app[CLIENT].request(
                request.method, url, data=body, headers=headers
            ) as upstream:
                payload = await upstream.read()
                out = {name: upstream.headers[name] for name in RESPONSE_HEADERS if name in upstream.headers}
                return web.Response(status=upstream.status, body=payload, headers=out)
        except aiohttp.ClientConnectorError as exc:
            # Nothing reached the instance, so trying the next one cannot duplicate a submission.
            logger.warning("%s at %s unreachable (%s); trying the next", JOB_QUEUE_SERVICE, instance.url, exc)
            lookup.suspect(instance)
    raise ServiceUnavailable(f"No {JOB_QUEUE_SERVICE} instance answered, try again shortly")
