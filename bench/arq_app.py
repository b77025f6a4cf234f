"""Baseline for bench/submit.py: what a user would write instead of job-queue-service, an
aiohttp handler that enqueues the job with arq (``create_pool(...).enqueue_job``) on the
same Redis, and answers 202 with a body of the same shape. No validation and no auth.

It runs in ``.venv-arq`` (arq pins redis-py below 6; see ``bench/requirements-arq.txt``):

    .venv-arq/bin/python bench/arq_app.py HTTP_PORT REDIS_PORT
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

from aiohttp import web
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

ARQ = web.AppKey("arq", ArqRedis)


async def submit(request: web.Request) -> web.Response:
    params = await request.json()
    job = await request.app[ARQ].enqueue_job("run_job", params)
    assert job is not None  # None only for a job id already taken: arq's ids are random
    body = {"jobId": job.job_id, "status": "QUEUED", "links": {"self": f"/api/jobs/{job.job_id}"}}
    return web.json_response(body, status=202, headers={"Location": f"/api/jobs/{job.job_id}"})


async def health(request: web.Request) -> web.Response:
    await request.app[ARQ].ping()
    return web.json_response({"status": "passing"})


def main() -> None:
    http_port, redis_port = int(sys.argv[1]), int(sys.argv[2])

    async def arq_ctx(app: web.Application) -> AsyncIterator[None]:
        app[ARQ] = await create_pool(RedisSettings(host="127.0.0.1", port=redis_port))
        yield
        await app[ARQ].aclose()

    app = web.Application()
    app.cleanup_ctx.append(arq_ctx)
    app.router.add_post("/api/jobs", submit)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=http_port, access_log=None, print=None)


if __name__ == "__main__":
    main()
