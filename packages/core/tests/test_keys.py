"""Every Redis name from one module; a job's keys share one cluster slot, its partition's,
and the partitions spread evenly over the slots."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from jobprogress_core.keys import MAX_PARTITIONS, QUEUE_GROUP, Keys, feed_topic, partition_tags

JOB = "0123456789abcdef0123456789abcdef"


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_names_and_prefix() -> None:
    keys = Keys("app:")
    tag = keys.tag(keys.partition_of(JOB))
    assert keys.queue(3) == f"app:jobs:{keys.tag(3)}"
    assert keys.queue_of(JOB) == f"app:jobs:{tag}"
    assert QUEUE_GROUP == "workers"
    assert keys.job(JOB) == f"app:job:{tag}:{JOB}"
    assert keys.events(JOB) == f"app:job:{tag}:{JOB}:events"
    assert keys.report_keys(JOB) == f"app:job:{tag}:{JOB}:keys"
    assert keys.history("app:ann") == "app:owner:{app:ann}:jobs"
    assert keys.hub_wake(3, "abc") == f"app:progress:wake:{keys.tag(3)}:abc"
    feed_tag = keys.tag(keys.partition_of("feed:app:ann"))
    assert keys.feed("app:ann") == f"app:owner:{feed_tag}:app:ann:feed"


def test_an_owners_feed_is_a_topic_read_with_its_partitions_streams() -> None:
    keys = Keys()
    for owner in ("app:ann", "browser:" + "a" * 32, "weird}{owner"):
        topic = feed_topic(owner)
        assert keys.events(topic) == keys.feed(owner)
        partition = keys.partition_of(topic)
        assert slot(keys.feed(owner)) == slot(keys.hub_wake(partition, "t")) == slot(keys.queue(partition))


def test_a_jobs_keys_share_its_partitions_slot() -> None:
    keys = Keys()
    for job in (JOB, "f" * 32, "0" * 31 + "1", uuid.uuid4().hex):
        partition = keys.partition_of(job)
        slots = {
            slot(keys.job(job)),
            slot(keys.events(job)),
            slot(keys.report_keys(job)),
            slot(keys.queue_of(job)),
            slot(keys.external_deadlines(partition)),
            slot(keys.tag(partition)),
            slot(keys.hub_wake(partition, uuid.uuid4().hex)),
        }
        assert len(slots) == 1, slots


@pytest.mark.parametrize("partitions", [1, 3, 16, 64, MAX_PARTITIONS])
def test_each_partition_hashes_into_its_own_share_of_the_slots(partitions: int) -> None:
    tags = partition_tags(partitions)
    assert len(set(tags)) == partitions
    for partition, tag in enumerate(tags):
        share = REDIS_CLUSTER_HASH_SLOTS / partitions
        assert partition * share <= slot(tag) < (partition + 1) * share + 1
    # Computed, not stored: the same in every process, and short.
    assert partition_tags.__wrapped__(partitions) == tags
    assert max(map(len, tags)) <= 8


def test_jobs_spread_evenly_over_the_partitions() -> None:
    keys = Keys(partitions=16)
    counts = Counter(keys.partition_of(uuid.uuid4().hex) for _ in range(16_000))
    assert set(counts) == set(range(16))
    assert min(counts.values()) > 800 and max(counts.values()) < 1200  # 1000 each, give or take


def test_the_number_of_partitions_is_bounded() -> None:
    for wrong in (0, -1, MAX_PARTITIONS + 1):
        with pytest.raises(ValueError, match="partitions must be"):
            Keys(partitions=wrong)
