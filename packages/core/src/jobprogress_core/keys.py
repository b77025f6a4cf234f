"""Every Redis key, stream and group name, in one place.

Jobs are spread over a fixed number of partitions (``JOBPROGRESS_PARTITIONS``). Each
partition has a hash tag of its own, chosen so that the tags fall evenly over Redis
Cluster's 16384 slots: partition ``p`` of ``P`` hashes into the ``p``-th of ``P`` equal
slot ranges. Every key of a job carries its partition's tag, so a job's hash, its event
stream and its queue shard share one slot, and each of the Lua scripts touches one slot.
So do the keys of one partition that a reader blocks on (its jobs' streams and its wake
stream): one ``XREAD`` per partition. Limits, stream leases and histories have tags of
their own (the subject's, the owner's).

The number of partitions is set once per deployment: changing it moves every job to
another partition (see the README, "Redis keys").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = [
    "DEFAULT_PARTITIONS",
    "FEED",
    "MAX_PARTITIONS",
    "PUSH_GROUP",
    "QUEUE_GROUP",
    "Keys",
    "feed_topic",
    "partition_tags",
]

QUEUE_GROUP = "workers"
#: The consumer group of job-queue-service instances that send Web Push for ended jobs.
PUSH_GROUP = "push"
#: How a *topic* (what the progress hub follows: a stream of entries) names an owner's feed
#: of new jobs; any other topic is a job id.
FEED = "feed:"
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 256


@cache
def partition_tags(partitions: int) -> tuple[str, ...]:
    """The hash tag of each partition: the first of ``p0``, ``p1``... (for partition 0;
    ``q0``... for 1, and so on) whose slot lies in the partition's share of the slots.
    Pure arithmetic on CRC16, so every process of every version computes the same tags."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be 1 to {MAX_PARTITIONS}, not {partitions}")
    tags = []
    for partition in range(partitions):
        low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
        high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
        candidate = 0
        while not low <= key_slot(_tag_candidate(partition, candidate).encode()) < high:
            candidate += 1
        tags.append(_tag_candidate(partition, candidate))
    return tuple(tags)


def feed_topic(owner: str) -> str:
    """The topic of an owner's feed of new jobs (see :meth:`Keys.feed`)."""
    return FEED + owner


def _tag_candidate(partition: int, candidate: int) -> str:
    return f"{partition}.{candidate:x}"


@dataclass(frozen=True)
class Keys:
    prefix: str = "jobprogress:"
    partitions: int = DEFAULT_PARTITIONS
    tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", partition_tags(self.partitions))

    def partition_of(self, topic: str) -> int:
        """The partition a job (or an owner's feed: a topic) lives in, for good (CRC32 of its
        id)."""
        return zlib.crc32(topic.encode()) % self.partitions

    def tag(self, partition: int) -> str:
        """The hash tag of a partition, braces included."""
        return f"{{{self.tags[partition]}}}"

    def queue(self, partition: int) -> str:
        """A partition's queue shard: the stream of its job ids waiting for a worker, with
        consumer group :data:`QUEUE_GROUP` of its own. In its jobs' slot, so that creating a
        job and queueing it could be one script."""
        return f"{self.prefix}jobs:{self.tag(partition)}"

    def queue_of(self, job_id: str) -> str:
        """The queue shard a job is queued in, for good: its partition's."""
        return self.queue(self.partition_of(job_id))

    def job(self, job_id: str) -> str:
        """Hash with the job's current state."""
        return f"{self.prefix}job:{self.tag(self.partition_of(job_id))}:{job_id}"

    def events(self, topic: str) -> str:
        """Stream of the job's events; entry IDs are the SSE event IDs. For a feed's topic
        (:func:`feed_topic`), the feed."""
        if topic.startswith(FEED):
            return self.feed(topic.removeprefix(FEED))
        return f"{self.job(topic)}:events"

    def feed(self, owner: str) -> str:
        """Stream of the owner's new jobs, one entry (``type`` ``status``, ``data``
        ``{"jobId"}``) per job created, capped and expiring as the history is. In the slot of
        a partition (its topic's), so that a hub reads it in the same ``XREAD`` as that
        partition's event streams: how a ``mine`` stream learns of a job as it is submitted."""
        return f"{self.prefix}owner:{self.tag(self.partition_of(feed_topic(owner)))}:{owner}:feed"

    def report_keys(self, job_id: str) -> str:
        """Sorted set of the idempotency keys of the events reported for an external job (the
        ``key`` of ``POST /api/jobs/{id}/events``), scored by order of arrival; capped, and
        expiring with the job."""
        return f"{self.job(job_id)}:keys"

    def external_deadlines(self, partition: int) -> str:
        """Sorted set of a partition's running external jobs: member the job id, score the
        end of its time limit (ms since the epoch), or of a sweeper's claim on it."""
        return f"{self.prefix}external:deadlines:{self.tag(partition)}"

    def history(self, owner: str) -> str:
        """Sorted set of the owner's job ids, scored by creation time (ms)."""
        return f"{self.prefix}owner:{{{owner}}}:jobs"

    def rate(self, limit: str, subject: str) -> str:
        """A rate limit's state for one subject (identity or client address): the GCRA
        theoretical arrival time, in ms of Redis's clock."""
        return f"{self.prefix}limit:{limit}:{{{subject}}}"

    def stream_leases(self, subject: str) -> str:
        """Sorted set of the open SSE streams of one subject, on every instance: member
        ``<instance>:<stream>``, score the lease's expiry (ms of Redis's clock)."""
        return f"{self.prefix}streams:{{{subject}}}"

    def hub_wake(self, partition: int, token: str) -> str:
        """The private stream of one progress process (``token``) for one partition, written
        to wake that partition's reader. It carries the partition's tag, so the reader's
        ``XREAD`` over it and the partition's event streams stays in one slot."""
        return f"{self.prefix}progress:wake:{self.tag(partition)}:{token}"

    def endings(self) -> str:
        """Stream of the jobs that ended (entry field ``jobId``), appended right after a
        job's terminal event; capped. Read by job-queue-service's Web Push sender, through
        consumer group :data:`PUSH_GROUP`: one instance handles each entry."""
        return f"{self.prefix}jobs:ended"

    def push_subscriptions(self, identity: str) -> str:
        """Hash of an identity's Web Push subscriptions: field a digest of the endpoint,
        value the subscription (JSON, with when it was added). Capped per identity; expires
        when not renewed (a page re-subscribing renews it)."""
        return f"{self.prefix}push:{{{identity}}}:subscriptions"
