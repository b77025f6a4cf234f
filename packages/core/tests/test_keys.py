"""Every Redis name from one module; a job's hash and stream share one cluster slot."""

from __future__ import annotations

from redis.crc import key_slot

from jobprogress_core.keys import QUEUE_GROUP, Keys


def test_names_and_prefix() -> None:
    keys = Keys("app:")
    job = "0123456789abcdef0123456789abcdef"
    assert keys.queue == "app:jobs"
    assert QUEUE_GROUP == "workers"
    assert keys.job(job) == f"app:job:{{{job}}}"
    assert keys.events(job) == f"app:job:{{{job}}}:events"
    assert keys.job_id_of_events(keys.events(job)) == job


def test_job_hash_and_event_stream_share_a_slot() -> None:
    keys = Keys()
    for job in (
        "0123456789abcdef0123456789abcdef",
        "ffffffffffffffffffffffffffffffff",
        "00000000000000000000000000000001",
    ):
        assert key_slot(keys.job(job).encode()) == key_slot(keys.events(job).encode())
