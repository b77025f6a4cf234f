"""Prometheus metrics of worker-service: the jobs this process runs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_IN_PROGRESS = Gauge("jobprogress_jobs_in_progress", "Jobs whose handler runs in this process now")
JOBS_RECLAIMED = Counter(
    "jobprogress_jobs_reclaimed_total", "Jobs taken over from a worker that stopped responding"
)
#: From the job's first start to its end (a reclaimed job's time includes its earlier runs).
JOB_DURATION = Histogram(
    "jobprogress_job_duration_seconds",
    "Time from a job's start to its end, by type and final status",
    ["type", "status"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
)
#: Over-claim: blocking reads on several shards at once can bring more than the free slots.
ENTRIES_GIVEN_BACK = Counter(
    "jobprogress_queue_entries_given_back_total",
    "Queue entries a blocking read brought when every slot was taken, given back to their shard at once",
)
