"""Commands that many tasks ask for in the same turn of the event loop, sent to Redis in
one pipeline.

A connect storm (thousands of SSE clients reconnecting at once, after a deploy or a network
blip) makes each stream ask for the same few reads and writes: its job's hash, its lease,
its first page of the log. Sent one by one, each takes a connection of the pool and a round
trip, and past the pool's wait the last ones fail. Through :class:`AutoPipeline` the
commands asked for while the loop runs its ready callbacks go out together as one
non-transactional pipeline once they have all run: one connection and one round trip for
all of them (on Redis Cluster, one per node: redis-py's cluster pipeline groups the
commands by slot, and none of them spans two slots).

Each caller gets the replies of its own commands; an error reply of one command is raised
to its caller alone, a failure of the whole pipeline (Redis unreachable) to every caller of
the batch, as each would have seen it alone. On a cluster, a node that fails (a master
killed, a slot moving) fails only its own commands in the pipeline, and redis-py does not
retry them there: their callers send their commands again, each on its own, through the
client's retries (which find the new master), as they would have without the batch. Every
command sent this way must therefore bear sending twice: reads, and writes that are
idempotent (a lease taken or dropped again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["AutoPipeline", "Fill"]

logger = logging.getLogger(__name__)

#: What a node of a cluster fails a command of a pipeline with, when redis-py would retry it
#: (a connection lost, a timeout, the cluster down or a slot not covered).
RETRIED = RedisCluster.ERRORS_ALLOW_RETRY
#: Adds one caller's commands to a pipeline (redis-py's or its cluster's), without awaiting.
Fill = Callable[[Any], object]


class AutoPipeline:
    """Batches of the commands asked for in one turn of the loop, at most ``max_batch``
    callers' each, sent as pipelines of ``redis``."""

    def __init__(self, redis: Redis | RedisCluster, *, max_batch: int = 1000) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._waiting: list[tuple[Fill, asyncio.Future[list[Any]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, fill: Fill) -> list[Any]:
        """The replies of the commands ``fill`` adds, sent with the others of this turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)  # after every callback ready now has run
        self._waiting.append((fill, future))
        replies = await future
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def run_script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """``script``'s reply, run with the others of this turn. Where Redis does not have
        the script (it restarted, or a node never had it) it did not run: it is then sent
        on its own, which loads it."""
        try:
            # execute_command: redis-py's cluster pipeline refuses its evalsha method, but
            # not the command itself, which it routes by its keys like any other.
            (reply,) = await self.call(
                lambda pipe: pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            )
        except NoScriptError:
            reply = await script(keys=keys, args=args)
        return reply

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self.max_batch):
            self._start(self._send(waiting[start : start + self.max_batch]))

    def _start(self, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(send)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Fill, asyncio.Future[list[Any]]]]) -> None:
        spans: list[tuple[tuple[Fill, asyncio.Future[list[Any]]], tuple[int, int]]] = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for fill, future in batch:
                    if future.done():  # its caller was cancelled: nothing to send
                        continue
                    before = len(pipe)
                    try:
                        fill(pipe)
                    except Exception as exc:  # refused by the client before any was sent
                        future.set_exception(exc)
                        continue
                    spans.append(((fill, future), (before, len(pipe))))
                replies = await pipe.execute(raise_on_error=False) if len(pipe) else []
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the process stopping): so are its callers
            for _, future in batch:
                future.cancel()
            raise
        for (fill, future), (start, end) in spans:
            if future.done():  # its caller was cancelled meanwhile
                continue
            mine = replies[start:end]
            if any(isinstance(reply, RETRIED) for reply in mine):
                self._start(self._send_alone(fill, future))
            else:
                future.set_result(mine)

    async def _send_alone(self, fill: Fill, future: asyncio.Future[list[Any]]) -> None:
        """One caller's commands in a pipeline of their own, which redis-py's cluster client
        retries (with the cluster's layout read again) when a node fails."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                fill(pipe)
                replies = await pipe.execute()
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(replies)
