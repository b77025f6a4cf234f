"""The handler API's richer reports on a real redis-server: steps with their start and end,
metrics that belong to the step they are reported in, artifacts and annotations checked as a
reporter's are, and an ETA that appears once there is a pace to go by."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from jobprogress_core.model import Event, EventType, Job
from jobprogress_core.store import JobStore
from worker_service import JobCancelled, JobContext, JobError


async def new_context(store: JobStore) -> JobContext:
    job = Job.new("build", {}, owner="t")
    await store.create(job, {"status": "QUEUED"})
    return JobContext(store, job)


async def events_of(store: JobStore, ctx: JobContext, event_type: EventType) -> list[Event]:
    return [event for event in await store.events(ctx.job_id) if event.type is event_type]


async def test_a_step_is_reported_when_it_starts_and_ends_with_its_metrics(
    jobprogress_store: JobStore,
) -> None:
    ctx = await new_context(jobprogress_store)
    async with ctx.step("Run tests") as step_id:
        await ctx.metric("passed", 12, step=1)
        await ctx.metrics({"passed": 30, "failed": 0}, step=2)
    async with ctx.step("Run tests"):  # a name met again: an id of its own
        pass
    await ctx.metric("total", 30)
    steps = await events_of(jobprogress_store, ctx, EventType.STEP)
    assert step_id == "run-tests"
    assert [(e.data["stepId"], e.data["status"]) for e in steps] == [
        ("run-tests", "running"), ("run-tests", "completed"),
        ("run-tests-2", "running"), ("run-tests-2", "completed"),
    ]  # fmt: skip
    started, ended = steps[1].data["startedAt"], steps[1].data["endedAt"]
    assert steps[0].data["startedAt"] == started and steps[0].data["endedAt"] is None
    assert datetime.fromisoformat(ended) >= datetime.fromisoformat(started)
    metrics = await events_of(jobprogress_store, ctx, EventType.METRIC)
    found = [{key: value for key, value in m.data.items() if key not in ("jobId", "ts")} for m in metrics]
    assert found == [
        {"metrics": [{"key": "passed", "value": 12}], "step": 1, "stepId": "run-tests"},
        {
            "metrics": [{"key": "passed", "value": 30}, {"key": "failed", "value": 0}],
            "step": 2,
            "stepId": "run-tests",
        },
        {"metrics": [{"key": "total", "value": 30}], "step": None},
    ]


async def test_steps_run_side_by_side_keep_their_own_metrics(jobprogress_store: JobStore) -> None:
    ctx = await new_context(jobprogress_store)

    async def run(name: str) -> None:
        async with ctx.step(name):
            await asyncio.sleep(0.01)  # the other step starts meanwhile
            await ctx.metric(f"{name}-done", 1)

    await asyncio.gather(run("left"), run("right"))
    await ctx.metric("after", 1)
    metrics = await events_of(jobprogress_store, ctx, EventType.METRIC)
    tagged = {m.data["metrics"][0]["key"]: m.data.get("stepId") for m in metrics}
    assert tagged == {"left-done": "left", "right-done": "right", "after": None}
    assert ctx.current_step is None
    with pytest.raises(ValueError, match="step"):
        await ctx.metric("loss", 1.0, step=-1)


@pytest.mark.parametrize(("raised", "status"), [(JobError("no"), "failed"), (JobCancelled("x"), "cancelled")])
async def test_a_step_that_raises_ends_as_failed_or_cancelled_and_the_error_goes_on(
    jobprogress_store: JobStore, raised: Exception, status: str
) -> None:
    ctx = await new_context(jobprogress_store)
    with pytest.raises(type(raised)):
        async with ctx.step("Compile"):
            raise raised
    steps = await events_of(jobprogress_store, ctx, EventType.STEP)
    assert [e.data["status"] for e in steps] == ["running", status]
    assert steps[-1].data["endedAt"] is not None


async def test_artifacts_and_annotations_are_checked_as_a_reporters_are(jobprogress_store: JobStore) -> None:
    ctx = await new_context(jobprogress_store)
    await ctx.artifact(
        "chart.png", url="https://cdn.example.com/c.png", kind="image", mime="image/png", size=10
    )
    await ctx.annotate("warning", "Disk almost full", title="Runner")
    for bad in ("javascript:alert(1)", "data:text/html,x", "/relative", "https://" + "a" * 2048):
        with pytest.raises(ValueError, match="url"):
            await ctx.artifact("x", url=bad)
    with pytest.raises(ValueError, match="kind"):
        await ctx.artifact("x", url="https://e.com", kind="video")
    with pytest.raises(ValueError, match="level"):
        await ctx.annotate("info", "x")
    with pytest.raises(ValueError, match="message"):
        await ctx.annotate("error", "")
    with pytest.raises(ValueError, match="finite"):
        await ctx.metric("loss", float("nan"))
    with pytest.raises(ValueError, match="finite"):
        await ctx.metric("loss", True)
    artifacts = await events_of(jobprogress_store, ctx, EventType.ARTIFACT)
    annotations = await events_of(jobprogress_store, ctx, EventType.ANNOTATION)
    assert [a.data["url"] for a in artifacts] == ["https://cdn.example.com/c.png"]
    assert [(a.data["level"], a.data["message"], a.data["title"]) for a in annotations] == [
        ("warning", "Disk almost full", "Runner")
    ]


async def test_progress_carries_an_eta_once_there_is_a_pace(jobprogress_store: JobStore) -> None:
    ctx = await new_context(jobprogress_store)
    await ctx.progress(1, 4, "one")
    await ctx.progress(2, 4, "two")
    await ctx.progress(4, 4, "done")
    progress = await events_of(jobprogress_store, ctx, EventType.PROGRESS)
    etas = [event.data.get("etaSeconds") for event in progress]
    assert all(isinstance(eta, int) and eta >= 0 for eta in etas[:2])
    assert etas[-1] == 0
