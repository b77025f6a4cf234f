"""The Celery app of tests/test_celery.py, imported by a real worker (``celery -A celery_app``)
and by the test: the README's task code as it is written, and two tasks more."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from jobprogress_client.celery import JobProgress, jobprogress_task

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_task_code() -> str:
    section = README.read_text().split("### Celery: a task reports its own job", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0]


exec(compile(readme_task_code(), str(README), "exec"), globals())  # app, import_rows
app: Any = globals()["app"]
app.conf.result_backend = app.conf.broker_url  # the same private redis-server: results too


@app.task
@jobprogress_task
def fail_at(progress: JobProgress, step: int) -> str:
    progress.log("starting")
    progress.step(step, step + 1)
    raise ValueError(f"step {step} went wrong")


@app.task
@jobprogress_task
def slow(progress: JobProgress, steps: int) -> str:
    for number in range(1, steps + 1):
        progress.check_cancelled()
        progress.step(number, steps)
        time.sleep(0.05)
    return "not cancelled"
