"""Cross-origin access, for a product's pages that embed ``/client/jobprogress.js``.

The module itself is public code: any origin may load it (``Access-Control-Allow-Origin: *``,
which by definition carries no credentials), always as ``text/javascript``. Reading a job is
not public: only the origins of ``JOBPROGRESS_CORS_ORIGINS`` get access, and only to the
streams (``GET /api/progress/{id}``, and of many jobs ``GET /api/progress?job=...`` and
``GET /api/progress/mine``) and a job's status (``GET /api/jobs/{id}``). They get their own
origin back, ``Vary: Origin`` and never ``Access-Control-Allow-Credentials``: the browser
sends no cookie cross-site, so the caller proves who it is with a token in the
``Authorization`` header (allowed by the preflight, which this answers for those routes).
Every other route, and every other origin, gets no CORS header at all.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Final

from aiohttp import hdrs, web

from jobprogress_core.errors import Forbidden, Handler

__all__ = ["MODULE_PATH", "Cors", "cors_route"]

MODULE_PATH: Final = "/client/jobprogress.js"
#: The only routes another origin may read: the streams (of one job, of many, of one's own
#: jobs), one job's status.
CORS_ROUTES: Final = (re.compile(r"/api/progress(/[^/]+)?"), re.compile(r"/api/jobs/[^/]+"))
READ_METHODS: Final = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})
ALLOW_HEADERS: Final = "Authorization, Last-Event-ID"
#: What a page may read of an answer besides the safelisted headers.
EXPOSE_HEADERS: Final = "Retry-After, X-Request-Id"
#: How long a browser may keep a preflight's answer (seconds).
MAX_AGE: Final = "600"


def cors_route(path: str) -> bool:
    return any(route.fullmatch(path) for route in CORS_ROUTES)


def _vary_origin(response: web.StreamResponse) -> None:
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = hdrs.ORIGIN
    elif hdrs.ORIGIN.lower() not in (part.strip().lower() for part in vary.split(",")):
        response.headers[hdrs.VARY] = f"{vary}, {hdrs.ORIGIN}"


class Cors:
    """The middleware (preflights) and the response hook (headers) for ``origins``."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.origins = frozenset(origins)

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.preflight_middleware)
        app.on_response_prepare.append(self.add_headers)

    def allowed(self, request: web.Request) -> str | None:
        """The request's ``Origin`` when it is on the allow-list, else ``None``."""
        origin = request.headers.get(hdrs.ORIGIN)
        return origin if origin in self.origins else None

    @web.middleware
    def preflight_middleware(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        """Answers the browser's ``OPTIONS`` preflight for the stream and the status; an
        origin not allowed, or a method other than ``GET``, is refused (403, no CORS header).
        Any other request goes on as the handler's own awaitable: no frame of this
        middleware stays for the length of a stream."""
        preflight = (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ORIGIN in request.headers
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        )
        if not (preflight and cors_route(request.path)):
            return handler(request)
        origin = self.allowed(request)
        method = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD]
        if origin is None or method not in READ_METHODS:
            raise Forbidden(
                "Cross-origin request refused: this origin may not read jobs here",
                details={"origin": request.headers[hdrs.ORIGIN][:200], "reason": "cross_origin"},
            )
        response = web.Response(status=204)
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "GET"
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOW_HEADERS
        response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = MAX_AGE
        response.headers[hdrs.VARY] = hdrs.ORIGIN
        return _answered(response)

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``, so that errors (a 404 before a stream) carry them too."""
        if request.method not in READ_METHODS:
            return
        if request.path == MODULE_PATH:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*"
            if response.status == 200:
                # Whatever the host's MIME table says: a module must be served as JavaScript.
                response.headers[hdrs.CONTENT_TYPE] = "text/javascript; charset=utf-8"
            return
        if not self.origins or not cors_route(request.path):
            return
        _vary_origin(response)
        origin = self.allowed(request)
        if origin is not None:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS


async def _answered(response: web.StreamResponse) -> web.StreamResponse:
    return response
