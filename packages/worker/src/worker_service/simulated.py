"""Built-in simulated jobs: a CI build, a data import and a report.

Each splits ``durationSeconds`` evenly over ``steps``, writes realistic log lines, and
fails at ``failAtStep`` when asked to.
"""

from __future__ import annotations

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
        await ctx.log(f"[{step}/{steps}] {name}: {first}")
        await ctx.sleep(step_seconds / 2)
        if fail_at == step:
            await ctx.log(f"[{step}/{steps}] {name}: error, giving up", level="error")
            raise JobError(f"Step {step}/{steps} ({name}) failed")
        await ctx.sleep(step_seconds / 2)
        await ctx.log(f"[{step}/{steps}] {name}: {last}")
        await ctx.progress(step, steps, f"Step {step}/{steps} complete: {name}")
    return RESULTS[job_type].format(steps=steps)


def builtin_handlers() -> HandlerRegistry:
    registry = HandlerRegistry()
    for job_type in STEP_PLANS:
        registry.register(job_type)(run_simulated)
    return registry
