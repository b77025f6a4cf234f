"""Defences for browsers: unsafe requests only from this site's own pages (no cross-site
request forgery), and the security headers of every response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from .errors import Forbidden, Handler
from .security import IDENTITY_COOKIE

__all__ = [
    "SAFE_METHODS",
    "SECURITY_HEADERS",
    "same_origin_middleware",
    "security_headers",
    "security_headers_hook",
]

ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]

SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS, hdrs.METH_TRACE})


@web.middleware
def same_origin_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Unsafe requests from a browser must come from this origin (no cross-site forgery).

    A browser names the page's origin in ``Origin`` (or at least ``Sec-Fetch-Site``) on every
    unsafe request; it must be this host. A request with neither is not from a current
    browser (a script, the CLI) and passes, unless it carries the identity cookie: that is
    what a forged request would ride on, so without proof of its origin it is refused.
    (A plain function returning the handler's awaitable: see ``request_id_middleware``.)"""
    if request.method in SAFE_METHODS:
        return handler(request)
    origin = request.headers.get(hdrs.ORIGIN)
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None:
        try:
            parts = urlsplit(origin)
        except ValueError:  # "http://[::1" and the like: no origin at all
            allowed = False
        else:
            allowed = parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
    elif site is not None:
        allowed = site in ("same-origin", "none")
    else:
        allowed = IDENTITY_COOKIE not in request.cookies
    if not allowed:
        raise Forbidden(
            "Cross-site request refused: unsafe requests must come from this site's own pages",
            details={"origin": (origin or "")[:200], "reason": "cross_site"},
        )
    return handler(request)


def security_headers(image_origins: Iterable[str] = ()) -> dict[str, str]:
    """The headers of every response, of every service: no inline script or style may run on
    the page, nothing is framed or sniffed, and no URL (a share link's token) leaks through
    ``Referer``. Images come from the page's own origin, ``data:`` URLs and ``image_origins``
    (``JOBPROGRESS_IMAGE_ORIGINS``: where artifact thumbnails are served)."""
    images = " ".join(("'self'", "data:", *image_origins))
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; "
            "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


#: :func:`security_headers` with images from the page's own origin only.
SECURITY_HEADERS = security_headers()


def security_headers_hook(headers: Mapping[str, str]) -> ResponseHook:
    """An ``on_response_prepare`` hook that sets ``headers`` on every response, streams and
    errors included, unless the handler set one of them itself."""

    async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in headers.items():
            response.headers.setdefault(name, value)

    return add_security_headers
