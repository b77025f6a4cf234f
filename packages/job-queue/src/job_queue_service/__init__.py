"""job-queue-service: accepts job submissions and answers their status.

The service is its app factory: ``create_app(settings)``, run by ``python -m job_queue_service``.
"""

from .app import SERVICE, create_app

__all__ = ["SERVICE", "create_app"]
