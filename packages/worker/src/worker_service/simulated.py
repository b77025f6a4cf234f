"""Built-in simulated jobs: a CI build, a data import and a report.

Each splits ``durationSeconds`` evenly over ``steps``, writes realistic log lines, and
fails at ``failAtStep`` when asked to.
"""

from __future__ import annotations

import math

from .context import HandlerRegistry, JobContext, JobError

STEP_PLANS: dict[str, list[tuple[str, list[str]]]] = {
    "build": [
        ("Checkout", ["Cloning repository...", "Checked out commit {sha}"]),
        ("Install dependencies", ["Resolving dependencies...", "Installed 142 packages"]),
        ("Compile", ["Compiling 58 modules...", "Compiled without warnings"]),
        ("Test", ["Running 312 tests...", "312 passed"]),
        ("Package", ["Building artifact...", "Wrote build-{n}.tar.gz"]),
        ("Publish", ["Uploading artifact...", "Published build-{n}"]),
    ],
    "import": [
        ("Download", ["Fetching data.csv...", "Downloaded 48 MB"]),
        ("Validate", ["Processing file data.csv...", "Validated 120000 rows"]),
        ("Transform", ["Normalising columns...", "Transformed 120000 rows"]),
        ("Load", ["Writing batch {n}...", "Loaded 120000 rows"]),
        ("Index", ["Rebuilding indexes...", "Indexes up to date"]),
    ],
    "report": [
        ("Query", ["Running query for period {n}...", "Fetched 9800 records"]),
        ("Aggregate", ["Aggregating by region...", "Computed 24 aggregates"]),
        ("Render", ["Rendering charts...", "Rendered 6 charts"]),
        ("Export", ["Exporting PDF...", "Wrote report-{n}.pdf"]),
    ],
}
RESULTS = {
    "build": "Build succeeded: all {steps} steps passed",
    "import": "Import finished: 120000 rows loaded",
    "report": "Report ready: report.pdf",
}


def _step(job_type: str, step: int) -> tuple[str, list[str]]:
    plan = STEP_PLANS[job_type]
    return plan[(step - 1) % len(plan)]


async def run_simulated(ctx: JobContext) -> str:
    job_type = ctx.job.type
    steps = int(ctx.params.get("steps", 4))
    duration = float(ctx.params.get("durationSeconds", 120.0))
    fail_at = ctx.params.get("failAtStep")
    step_seconds = duration / steps
    if ctx.resume_step:
        await ctx.log(f"Resuming after step {ctx.resume_step}/{steps}")
    for step in range(ctx.resume_step + 1, steps + 1):
        await ctx.check_cancelled()
        name, lines = _step(job_type, step)
        first, last = (line.format(sha=ctx.job_id[:7], n=step) for line in lines)
        async with ctx.step(name):
            await ctx.log(f"[{step}/{steps}] {name}: {first}")
            await ctx.sleep(step_seconds / 2)
            if fail_at == step:
                await ctx.log(f"[{step}/{steps}] {name}: error, giving up", level="error")
                raise JobError(f"Step {step}/{steps} ({name}) failed")
            await _measure(ctx, name, step, steps, halfway=True)
            await ctx.sleep(step_seconds / 2)
            await _measure(ctx, name, step, steps, halfway=False)
            await ctx.log(f"[{step}/{steps}] {name}: {last}")
        await ctx.progress(step, steps, f"Step {step}/{steps} complete: {name}")
    if job_type == "report":
        await ctx.artifact(
            "report.pdf",
            url=f"https://reports.example.com/{ctx.job_id}/report.pdf",
            mime="application/pdf",
            size=48_213,
        )
    return RESULTS[job_type].format(steps=steps)


async def _measure(ctx: JobContext, name: str, step: int, steps: int, *, halfway: bool) -> None:
    """What each type measures as it goes: a build its tests passed, an import its rows per
    second (two points a step: a chart), a report nothing but its artifact."""
    tick = 2 * step - (1 if halfway else 0)
    if ctx.job.type == "build" and name == "Test":
        await ctx.metric("testsPassed", 156 if halfway else 312, step=tick)
        if not halfway:
            await ctx.annotate("warning", "3 tests were skipped: no GPU on this runner", title="Test")
    elif ctx.job.type == "import":
        await ctx.metric("rowsPerSecond", round(2400 + 600 * math.sin(tick), 1), step=tick)


def builtin_handlers() -> HandlerRegistry:
    registry = HandlerRegistry()
    for job_type in STEP_PLANS:
        registry.register(job_type)(run_simulated)
    return registry
