"""worker-service: runs jobs taken from the queue and reports their progress.

Job code plugs in through the handler API::

    from worker_service import HandlerRegistry, JobContext, JobError

    handlers = HandlerRegistry()

    @handlers.register("compile")
    async def compile_(ctx: JobContext) -> str:
        ...
"""

from .context import HandlerRegistry, JobCancelled, JobContext, JobError

__all__ = ["HandlerRegistry", "JobCancelled", "JobContext", "JobError"]
