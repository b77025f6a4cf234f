"""The richer events' state: the estimate of the time left (none without a pace, then one
that follows the pace and settles when it is steady); the steps and latest metrics a job's
hash keeps for snapshots, on a real redis-server; the limits per job."""

from __future__ import annotations

import pytest

from jobprogress_core.event_data import (
    JOB_LIMITS,
    EtaEstimate,
    EventLimit,
    annotation_data,
    artifact_data,
    metric_data,
    step_data,
)
from jobprogress_core.model import EventType, Job
from jobprogress_core.store import JobStore, NewEvent


def test_no_estimate_until_the_percentage_has_moved() -> None:
    eta = EtaEstimate(0.0, 0)
    assert eta.update(10.0, 0) is None
    assert eta.update(20.0, 10) is not None


def test_a_steady_pace_gives_the_time_left() -> None:
    eta = EtaEstimate(0.0, 0)
    estimates = [eta.update(float(t), t) for t in range(10, 100, 10)]  # 1 % per second
    assert estimates[-1] == 10
    assert estimates == [100 - t for t in range(10, 100, 10)]
    assert eta.update(100.0, 100) == 0


def test_the_estimate_moves_towards_a_new_pace_without_jumping() -> None:
    eta = EtaEstimate(0.0, 0)
    for t in range(10, 60, 10):
        eta.update(float(t), t)  # 1 % per second up to 50 %
    slower = [eta.update(50.0 + 20 * n, 50 + 10 * n) for n in range(1, 5)]  # now 0.5 % per second
    assert all(isinstance(e, int) for e in slower)
    after_one = 40 / (0.3 * 0.5 + 0.7 * 1.0)
    assert slower[0] == round(after_one)  # one report at the new pace moves it part of the way
    assert slower[0] < slower[1] or slower[1] < slower[0]  # and it keeps moving as reports come
    assert abs(slower[-1] - 10 / 0.5) < abs(slower[0] - 40 / 0.5)  # towards the new pace's answer


def test_a_percentage_that_goes_back_is_not_a_pace() -> None:
    eta = EtaEstimate(0.0, 50)
    assert eta.update(10.0, 40) is None


async def new_job(store: JobStore) -> Job:
    job = Job.new("build", {}, owner="t")
    await store.create(job, {"status": "QUEUED"})
    return job


async def test_the_job_keeps_its_steps_and_latest_metrics_for_snapshots(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    started, ended = "2026-12-02T10:00:00.000Z", "2026-12-02T10:01:00.000Z"
    await store.append(
        job.id, EventType.STEP, step_data("build", "running", name="Build", started_at=started)
    )
    await store.append(job.id, EventType.STEP, step_data("test", "running", name="Test", started_at=ended))
    await store.append(job.id, EventType.METRIC, metric_data({"loss": 0.5, "acc": 0.8}, step=1))
    await store.append(job.id, EventType.STEP, step_data("build", "completed", ended_at=ended))
    await store.append(job.id, EventType.METRIC, metric_data({"loss": 0.25}, step=2))
    await store.append(job.id, EventType.ARTIFACT, artifact_data("log.txt", url="https://e.com/log.txt"))
    await store.append(job.id, EventType.ANNOTATION, annotation_data("warning", "slow disk"))
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.steps == [
        {"stepId": "build", "name": "Build", "status": "completed", "startedAt": started, "endedAt": ended},
        {"stepId": "test", "name": "Test", "status": "running", "startedAt": ended},
    ]
    assert stored.metrics == {"loss": {"value": 0.25, "step": 2}, "acc": {"value": 0.8, "step": 1}}
    assert (stored.artifacts, stored.annotations) == (1, 1)
    view = stored.to_json()  # what GET /api/jobs/{id} and a reset event show
    assert view["steps"] == stored.steps and view["metrics"] == stored.metrics


async def test_a_snapshots_metric_values_are_the_events_own(jobprogress_store: JobStore) -> None:
    """Every digit a value has (Redis's cjson alone would keep 14), big, small, whole."""
    store = jobprogress_store
    job = await new_job(store)
    values = {"loss": 0.1 + 0.2, "tiny": 1.2345678901234567e-300, "big": -9.87654321012345e20, "n": 42}
    await store.append(job.id, EventType.METRIC, metric_data(values, step=123_456_789_012))
    await store.append(job.id, EventType.METRIC, metric_data({'quote"d\\': 1 / 3}))
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.metrics == {
        key: {"value": value, "step": 123_456_789_012} for key, value in values.items()
    } | {'quote"d\\': {"value": 1 / 3, "step": None}}
    assert isinstance(stored.metrics["n"]["value"], int)


async def test_past_a_jobs_limit_a_batch_is_refused_whole(jobprogress_store: JobStore) -> None:
    store = jobprogress_store
    job = await new_job(store)
    most = JOB_LIMITS["annotation"]
    batch = [
        NewEvent("annotation", {"jobId": job.id, **annotation_data("notice", f"n{n}")}) for n in range(most)
    ]
    assert (await store.append_batch(job.id, batch)).status == "ok"
    before = len(await store.events(job.id, count=10_000))
    log = NewEvent("log", {"jobId": job.id, "line": "x", "level": "info"})
    with pytest.raises(EventLimit, match=f"at most {most} annotations"):
        await store.append_batch(job.id, [log, batch[0]])
    assert len(await store.events(job.id, count=10_000)) == before  # not even the log line
    metrics = {f"k{n}": float(n) for n in range(JOB_LIMITS["metric"])}
    for chunk in (dict(list(metrics.items())[:50]), dict(list(metrics.items())[50:])):
        await store.append(job.id, EventType.METRIC, metric_data(chunk))
    await store.append(job.id, EventType.METRIC, metric_data({"k0": 1.0}))  # a known key: fine
    with pytest.raises(EventLimit, match="metric keys"):
        await store.append(job.id, EventType.METRIC, metric_data({"one-more": 1.0}))
    stored = await store.get(job.id)
    assert stored is not None and len(stored.metrics) == JOB_LIMITS["metric"] and stored.annotations == most
