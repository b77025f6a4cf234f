"""Limits that hold across instances, kept in Redis: so that no single client can exhaust
the services, whichever instance it reaches.

- :class:`RateLimit`: hits per subject (an identity, or a client address) over a period,
  as a GCRA: a burst of up to the limit, then an even rate. One Lua script per hit (or a
  part of a larger one: a job submission, :mod:`.submissions`).
- :class:`StreamLeases`: concurrent SSE streams per subject. Each open stream holds a lease
  (a sorted-set member with an expiry) that its instance renews while the stream lasts and
  drops when it ends, so the leases of an instance that died lapse by themselves.

Both judge time by Redis's clock. Past a limit they raise :class:`TooManyRequests` (429 with
``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from redis.asyncio import Redis

from .autopipeline import AutoPipeline
from .errors import TooManyRequests
from .keys import Keys
from .redis import REDIS_ERRORS
from .security import new_identity
from .store import load_script
from .tasks import cancel_and_wait
from .web import CLIENT_FACING_SETTINGS, JOB_QUEUE_SETTINGS, KEYS, PROGRESS_SETTINGS, REDIS

logger = logging.getLogger(__name__)


class RateLimit:
    """``limit`` hits per ``period`` seconds for each subject, across every instance."""

    def __init__(self, redis: Redis, keys: Keys, name: str, *, limit: int, period: float) -> None:
        self.keys = keys
        self.name = name
        self.limit = limit
        self.period = period
        self.interval_ms = max(1, round(period * 1000 / limit))
        self._script = redis.register_script(load_script("rate_limit.lua"))

    async def hit(self, subject: str, what: str) -> None:
        """Count one hit of ``subject``; :class:`TooManyRequests` past the limit."""
        wait_ms = int(await self._script(keys=[self.key(subject)], args=[self.interval_ms, self.limit]))
        if wait_ms > 0:
            raise self.refusal(wait_ms, what)

    def key(self, subject: str) -> str:
        """Where the limit's state for ``subject`` is kept (for a script that counts a hit
        along with other work: ``lua/gcra.lua``)."""
        return self.keys.rate(self.name, subject)

    def refusal(self, wait_ms: int, what: str) -> TooManyRequests:
        """The 429 of a hit refused, the next one allowed in ``wait_ms``."""
        return TooManyRequests(
            f"Too many {what}: at most {self.limit} per {self.period_text}; try again shortly",
            retry_after=wait_ms / 1000,
        )

    @property
    def period_text(self) -> str:
        return "minute" if self.period == 60 else f"{self.period:g} s"


@dataclass(eq=False)
class Lease:
    subject: str
    member: str = field(default_factory=lambda: uuid.uuid4().hex)


class StreamLeases:
    """At most ``limit`` concurrent streams per subject, on all instances together.

    Taking and dropping leases go through an :class:`AutoPipeline`: the leases of streams
    that open (or end) in the same turn of the event loop share one round trip."""

    def __init__(self, redis: Redis, keys: Keys, *, limit: int, lease_seconds: float = 60.0) -> None:
        self.redis = redis
        self.keys = keys
        self.limit = limit
        self.lease_ms = int(lease_seconds * 1000)
        self.instance = uuid.uuid4().hex[:12]
        self.held: set[Lease] = set()
        self._script = redis.register_script(load_script("stream_lease.lua"))
        self._batch = AutoPipeline(redis)

    @contextlib.asynccontextmanager
    async def hold(self, subject: str) -> AsyncIterator[Lease]:
        """A lease for one stream of ``subject`` for the ``async with`` block."""
        lease = await self.take(subject)
        try:
            yield lease
        finally:
            await self.release(lease)

    async def take(self, subject: str) -> Lease:
        """A lease for one stream of ``subject``, to :meth:`release` when it ends;
        :class:`TooManyRequests` when the subject holds its limit already."""
        lease = Lease(subject, f"{self.instance}:{uuid.uuid4().hex}")
        if not await self._take(lease, self.limit):
            raise TooManyRequests(
                f"Too many open streams: at most {self.limit} at once; close one or try again shortly",
                retry_after=5,
            )
        self.held.add(lease)
        return lease

    async def release(self, lease: Lease) -> None:
        self.held.discard(lease)
        key = self.keys.stream_leases(lease.subject)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._batch.call(lambda pipe: pipe.zrem(key, lease.member))

    async def _take(self, lease: Lease, limit: int) -> bool:
        key = self.keys.stream_leases(lease.subject)
        args = (lease.member, self.lease_ms, limit)
        try:
            return bool(await self._batch.run_script(self._script, [key], args))
        except BaseException:
            # Cut short (the client left, Redis failed): the script may have run all the same.
            with contextlib.suppress(*REDIS_ERRORS):
                await asyncio.shield(self.redis.zrem(key, lease.member))
            raise

    async def renew(self) -> None:
        """Renew every lease this instance holds (a third of the lease time apart)."""
        leases = list(self.held)
        for start in range(0, len(leases), 500):
            async with self.redis.pipeline(transaction=False) as pipe:
                for lease in leases[start : start + 500]:
                    await self._script(
                        keys=[self.keys.stream_leases(lease.subject)],
                        args=[lease.member, self.lease_ms, 0],
                        client=pipe,
                    )
                await pipe.execute()

    async def run(self) -> None:
        """The renewal loop; one per process."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.renew()
            except REDIS_ERRORS as exc:
                logger.warning("could not renew %d stream leases: %s", len(self.held), exc)


def client_address(request: web.Request, trusted_proxy_hops: int) -> str:
    """The client's address: the peer's, or behind ``trusted_proxy_hops`` reverse proxies
    that each append to ``X-Forwarded-For``, the address the outermost of them saw."""
    if trusted_proxy_hops > 0:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= trusted_proxy_hops:
            return forwarded[-trusted_proxy_hops]
    return request.remote or "unknown"


SUBMISSIONS = web.AppKey("submission_limit", RateLimit)
NEW_IDENTITIES = web.AppKey("new_identity_limit", RateLimit)


async def identity_limit_ctx(app: web.Application) -> AsyncIterator[None]:
    """New identities per client address (job-queue, progress; after the Redis context)."""
    settings = app[CLIENT_FACING_SETTINGS]
    app[NEW_IDENTITIES] = RateLimit(
        app[REDIS], app[KEYS], "identity", limit=settings.new_identities_per_minute, period=60
    )
    yield


async def submission_limit_ctx(app: web.Application) -> AsyncIterator[None]:
    """Job submissions per identity (job-queue; after the Redis context)."""
    limit = app[JOB_QUEUE_SETTINGS].submissions_per_minute
    app[SUBMISSIONS] = RateLimit(app[REDIS], app[KEYS], "submit", limit=limit, period=60)
    yield


async def mint_identity(request: web.Request) -> str:
    """A new identity for the client of ``request``, within the limit per client address
    (else minting identities would get round every limit per identity)."""
    address = client_address(request, request.app[CLIENT_FACING_SETTINGS].trusted_proxy_hops)
    await request.app[NEW_IDENTITIES].hit(address, "new identities from this address")
    return new_identity()


STREAM_LEASES = web.AppKey("stream_leases", StreamLeases)


async def stream_leases_ctx(app: web.Application) -> AsyncIterator[None]:
    """Concurrent streams per identity (progress-service), with the renewal loop."""
    leases = StreamLeases(app[REDIS], app[KEYS], limit=app[PROGRESS_SETTINGS].streams_per_identity)
    app[STREAM_LEASES] = leases
    task = asyncio.create_task(leases.run(), name="stream-leases")
    yield
    await cancel_and_wait(task)
