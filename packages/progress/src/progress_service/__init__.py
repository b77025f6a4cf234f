"""progress-service: SSE streams of job progress, the browser page and its job API.

The service is its app factory: ``create_app(settings)``, run by ``python -m progress_service``.
"""

from .app import SERVICE, create_app

__all__ = ["SERVICE", "create_app"]
