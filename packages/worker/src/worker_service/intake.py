"""How a worker takes queue entries: never more than it has free slots for, from every shard
fairly, and at once when it is idle.

The queue is one stream per partition (:mod:`jobprogress_core.queue`), and on Redis Cluster
no read may span two of them. So a worker reads in two ways:

- **Sweeps** (``JobQueue.take``, run by the job loop whenever a slot is free): a
  non-blocking ``XREADGROUP COUNT 1`` on each shard in turn, pipelined, asking at most as
  many shards per round trip as it has slots free. A sweep starts after the shard served
  last, so a busy shard gives one entry per round and cannot starve the others: with one
  slot and sixteen shards, a job alone on its shard waits for fifteen other jobs at most.
  A sweep never takes more entries than there are free slots.
- **Waits** (:class:`ShardWatch`): when a sweep found nothing and slots are still free, a
  blocking ``XREADGROUP COUNT 1`` on every shard, each on a connection of its own, at most
  one in flight per shard. A job submitted to an idle worker starts within milliseconds,
  whatever its shard. A read that returns is not issued again until the loop waits again
  (after another empty sweep); the others stay in flight.

Over-claim: the waits run side by side, so together they can bring more entries than there
are free slots (jobs landing on several shards at once, or while a sweep holds the slots).
An entry that finds no free slot is given back at once: a new entry of its job at the end
of its shard and the old one acknowledged, in one transaction; its job was never touched.
It cannot bounce for ever. Reads are issued only by a wait, after a sweep found every shard
empty, each read brings one entry at most, and an entry is only given back because the slot
went to another job: every give-back comes with a job started.

Connections: the blocking reads use the reader client, one connection per shard at most
(``JOBPROGRESS_PARTITIONS``; per node on a cluster), whatever the load. Everything else
(sweeps, acknowledgements, reports) uses the service's own pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from jobprogress_core.queue import JobQueue, QueueEntry
from jobprogress_core.redis import disconnect
from jobprogress_core.tasks import cancel_and_wait

from .handback import give_back

__all__ = ["Intake", "ShardWatch", "Slots"]

logger = logging.getLogger(__name__)

#: How long closing waits for the blocking reads to end once their connections are closed.
CLOSE_TIMEOUT = 5.0
#: Stale entries are looked for every this fraction of the visibility timeout.
RECLAIM_EVERY = 0.25
#: The shortest wait on the shards (when the next look for stale entries is due sooner).
MIN_WAIT_SECONDS = 0.01

#: Runs an entry under the slot taken for it (``reclaimed``: taken over from a dead worker).
Launch = Callable[[QueueEntry, bool], None]


class Slots:
    """The jobs a worker runs at once: a slot is taken for each entry it runs (or reserved
    by the job loop for a sweep) and freed when that job is done with."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return self.size - self.used

    def take(self, wanted: int = 1) -> int:
        """Take up to ``wanted`` free slots, without waiting; how many were taken."""
        taken = min(wanted, self.free)
        self.used += taken
        return taken

    def release(self, count: int = 1) -> None:
        self.used -= count
        self._freed.set()

    async def wait_free(self) -> None:
        """Until at least one slot is free."""
        while not self.free:
            self._freed.clear()
            await self._freed.wait()


class ShardWatch:
    """Blocking reads on every shard of ``queue`` for ``consumer``, at most one in flight per
    shard. What a read brings goes to ``deliver``, which runs it or gives it back."""

    def __init__(
        self,
        queue: JobQueue,
        consumer: str,
        deliver: Callable[[QueueEntry], Awaitable[None]],
        *,
        block_ms: int,
    ) -> None:
        self.queue = queue
        self.consumer = consumer
        self.deliver = deliver
        self.block_ms = block_ms
        self.reads: dict[int, asyncio.Task[None]] = {}

    async def wait(self, timeout: float) -> None:
        """Have a read in flight on every shard, and wait until one has returned (what it
        brought is delivered by then) or ``timeout`` seconds have passed. The Redis error a
        read ended with is raised, for the job loop to back off.

        A cluster client learns the cluster's layout at its first command, and again after
        a connection error; reads that start together would each set about it and close
        one another's connections (redis-py 8.1). So the reader learns it first, once."""
        if len(self.reads) < len(self.queue.shards):
            await self.queue.reader.initialize()  # nothing to do for a single Redis's client
        for shard in self.queue.shards:
            if shard not in self.reads:
                self.reads[shard] = asyncio.create_task(self._read(shard), name=f"queue-read-{shard}")
        await asyncio.wait(self.reads.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        errors = [error for error in map(self._forget_if_done, list(self.reads)) if error is not None]
        if errors:
            raise errors[0]

    def _forget_if_done(self, shard: int) -> BaseException | None:
        task = self.reads[shard]
        if not task.done():
            return None
        del self.reads[shard]
        return None if task.cancelled() else task.exception()

    async def _read(self, shard: int) -> None:
        for entry in await self.queue.wait(self.consumer, shard, block_ms=self.block_ms):
            await self.deliver(entry)

    async def close(self) -> None:
        """End the reads in flight. Their connections are closed under them (cancelling a
        blocked read does not always end it), so each fails at once; one that does not is
        cancelled. An entry Redis gave a read whose reply was lost stays pending for the
        consumer, which releases it as it stops."""
        reads, self.reads = list(self.reads.values()), {}
        if not reads:
            return
        await disconnect(self.queue.reader)
        _, late = await asyncio.wait(reads, timeout=CLOSE_TIMEOUT)
        if late:
            logger.warning("%d queue reads did not end in %.0fs; cancelling them", len(late), CLOSE_TIMEOUT)
            await cancel_and_wait(*late)
        await asyncio.gather(*reads, return_exceptions=True)


class Intake:
    """What the job loop takes, and how: stale entries when a look for them is due, then
    new ones by a sweep (:meth:`take`); when there were none, a wait on every shard
    (:meth:`wait`). Each entry goes to ``launch`` under a slot of ``slots`` taken for it."""

    def __init__(
        self, queue: JobQueue, consumer: str, slots: Slots, launch: Launch, *, block_ms: int
    ) -> None:
        self.queue = queue
        self.consumer = consumer
        self.slots = slots
        self.launch = launch
        self.block_ms = block_ms
        self.watch = ShardWatch(queue, consumer, self.deliver, block_ms=block_ms)
        #: In the middle of a sweep: cancelling it could lose entries Redis has given us.
        self.taking = False
        #: Once set, what a blocking read still brings is given back.
        self.closing = False
        self.group_ready = False
        #: When the next look for stale entries is due (the loop's clock).
        self.reclaim_at = 0.0

    async def take(self) -> int:
        """Start what there is, as far as slots are free; how many entries were taken. The
        free slots are reserved meanwhile, so that an entry a blocking read brings meanwhile
        is given back rather than run beyond them."""
        self.taking = True
        reserved = self.slots.take(self.slots.free)
        taken = 0
        try:
            if not self.group_ready:
                await self.queue.ensure_group()
                self.group_ready = True
            for entry in await self._reclaim_if_due(reserved):
                self.launch(entry, True)
                taken += 1
            for entry in await self.queue.take(self.consumer, reserved - taken):
                self.launch(entry, False)
                taken += 1
            return taken
        finally:
            self.slots.release(reserved - taken)
            self.taking = False

    async def _reclaim_if_due(self, limit: int) -> list[QueueEntry]:
        """Stale entries, up to ``limit``, if a look for them is due. An entry goes stale
        only after the visibility timeout, so a look every quarter of it is enough (and the
        next one at once when this one filled every slot)."""
        now = asyncio.get_running_loop().time()
        if now < self.reclaim_at or not limit:
            return []
        found = await self.queue.reclaim(self.consumer, limit)
        if len(found) < limit:
            self.reclaim_at = now + self.queue.visibility_ms / 1000 * RECLAIM_EVERY
        return found

    async def wait(self) -> None:
        """Wait on every shard for a new entry: a blocking read's time at most, less when the
        next look for stale entries is due sooner."""
        until_reclaim = self.reclaim_at - asyncio.get_running_loop().time()
        await self.watch.wait(max(min(self.block_ms / 1000, until_reclaim), MIN_WAIT_SECONDS))

    async def deliver(self, entry: QueueEntry) -> None:
        """An entry a blocking read brought: run it if a slot is free, else give it back."""
        if not self.closing and self.slots.take():
            self.launch(entry, False)
        else:
            await give_back(self.queue, entry)

    async def close(self) -> None:
        """Take nothing more; end the blocking reads."""
        self.closing = True
        await self.watch.close()
