"""Every Redis key, stream and group name, in one place.

A job's hash and its event stream share the hash tag ``{<job id>}``, so they live in
one Redis Cluster slot and can be changed in one atomic step.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_GROUP = "workers"


@dataclass(frozen=True)
class Keys:
    prefix: str = "jobprogress:"

    @property
    def queue(self) -> str:
        """Stream of job ids waiting for a worker (consumer group :data:`QUEUE_GROUP`)."""
        return f"{self.prefix}jobs"

    def job(self, job_id: str) -> str:
        """Hash with the job's current state."""
        return f"{self.prefix}job:{{{job_id}}}"

    def events(self, job_id: str) -> str:
        """Stream of the job's events; entry IDs are the SSE event IDs."""
        return f"{self.prefix}job:{{{job_id}}}:events"

    def report_keys(self, job_id: str) -> str:
        """Sorted set of the idempotency keys of the events reported for an external job (the
        ``key`` of ``POST /api/jobs/{id}/events``), scored by order of arrival; capped, and
        expiring with the job."""
        return f"{self.prefix}job:{{{job_id}}}:keys"

    @property
    def external_deadlines(self) -> str:
        """Sorted set of the running external jobs: member the job id, score the end of its
        time limit (ms since the epoch), or of a sweeper's claim on it."""
        return f"{self.prefix}external:deadlines"

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

    def hub_wake(self, token: str) -> str:
        """A progress process's private stream, written to wake its reader."""
        return f"{self.prefix}progress:wake:{token}"

    def job_id_of_events(self, key: str) -> str:
        """The job id inside an event stream key (inverse of :meth:`events`)."""
        start = key.index("{") + 1
        return key[start : key.index("}", start)]
