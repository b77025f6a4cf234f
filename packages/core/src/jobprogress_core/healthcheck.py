"""``python -m jobprogress_core.healthcheck [SERVICE]``: is this machine's service healthy?

For container health checks (``deploy/Dockerfile``'s ``HEALTHCHECK``, the healthchecks in
``docker-compose.yml``). The service is the argument, else ``$SERVICE`` (set in the image).
Its address comes from the same settings the service reads (``JOBPROGRESS_HOST``,
``JOBPROGRESS_PORT``, else the service's own default port); a wildcard listen address is
checked on the loopback. ``GET /health`` answering 200 exits 0; anything else exits 1 with
a one-line reason on stderr. Only the standard library is used, with a short timeout.
"""

from __future__ import annotations

import http.client
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from .settings import WILDCARD_HOSTS, ConfigError, Settings

#: Seconds to wait for ``/health``; below the image's ``HEALTHCHECK --timeout``.
TIMEOUT = 2.0

USAGE = "usage: python -m jobprogress_core.healthcheck [SERVICE] (or set SERVICE)"


def health_url(settings: Settings) -> str:
    """Where the service described by ``settings`` answers ``/health`` on this machine."""
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/health"


def probe(url: str, timeout: float = TIMEOUT) -> str | None:
    """``None`` when ``url`` answers 200, else why not."""
    # No proxy from the environment: the service is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, http.client.HTTPException, ValueError) as exc:  # refused, timed out, not HTTP
        reason = getattr(exc, "reason", exc)
        return f"{url} unreachable: {reason}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(USAGE, file=sys.stderr)
        return 1
    service = args[0] if args else os.environ.get("SERVICE", "")
    if not service:
        print(f"unhealthy: no service named. {USAGE}", file=sys.stderr)
        return 1
    # Settings warn about a development secret; that is the service's business, not ours.
    logging.basicConfig(level=logging.ERROR)
    try:
        settings = Settings.from_env(service)
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    reason = probe(health_url(settings))
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
