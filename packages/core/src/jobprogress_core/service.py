"""The thin ``main`` of every service: settings, logging, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

from aiohttp import web

from .logs import configure_logging
from .settings import ConfigError, JobQueueSettings, ProgressSettings, Settings, WorkerSettings
from .web import LISTENING_HOOKS, STOP_HOOKS

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=Settings)
#: A service's ``create_app``: its own settings in, its application out.
AppFactory = Callable[[S], web.Application]

#: Pending connections the kernel queues for us; aiohttp's 128 makes mass reconnects crawl.
LISTEN_BACKLOG = 4096


class _HeldBack(logging.Handler):
    """Keeps what is logged before logging is configured (reading the settings warns), to be
    logged once it is, in the format chosen (JSON lines, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def replay(self) -> None:
        """Log what was kept through the handlers configured now (once)."""
        records, self.records = self.records, []
        for record in records:
            logging.getLogger(record.name).handle(record)


@overload
def main(service: Literal["job-queue-service"], create_app: AppFactory[JobQueueSettings]) -> None: ...
@overload
def main(service: Literal["worker-service"], create_app: AppFactory[WorkerSettings]) -> None: ...
@overload
def main(service: Literal["progress-service"], create_app: AppFactory[ProgressSettings]) -> None: ...
def main(service: str, create_app: AppFactory[Any]) -> None:
    """Run ``service``: its own settings (:meth:`Settings.from_env`), logging, its app."""
    held = _HeldBack()
    logging.getLogger().addHandler(held)
    try:
        try:
            settings = Settings.from_env(service)
        finally:
            logging.getLogger().removeHandler(held)
        configure_logging(service, settings.log_level, settings.log_json)
        held.replay()
        app = create_app(settings)
    except ConfigError as exc:
        logging.basicConfig(format=f"{service}: %(message)s")
        held.replay()
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        asyncio.run(serve(app, settings))
    except OSError as exc:
        logger.error("cannot serve on %s:%s: %s", settings.host, settings.port, exc)
        raise SystemExit(1) from None


async def serve(app: web.Application, settings: Settings) -> None:
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=settings.shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=LISTEN_BACKLOG)
        await site.start()
        logger.info("%s listening on http://%s:%s", settings.service, settings.host, settings.port)
        for start in app[LISTENING_HOOKS]:
            start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logger.info("stopping %s", settings.service)
        for hook in app[STOP_HOOKS]:
            await hook()
    finally:
        await runner.cleanup()
    logger.info("%s stopped", settings.service)
