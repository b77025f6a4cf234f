"""Baseline for bench/submit.py: a bare aiohttp handler that parses the same JSON body and
answers 202 with a body of the same shape, with no validation and no Redis."""

from __future__ import annotations

import sys
import uuid

from aiohttp import web


async def submit(request: web.Request) -> web.Response:
    await request.json()
    job_id = uuid.uuid4().hex
    body = {"jobId": job_id, "status": "QUEUED", "links": {"self": f"/api/jobs/{job_id}"}}
    return web.json_response(body, status=202, headers={"Location": f"/api/jobs/{job_id}"})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "passing"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/api/jobs", submit)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
