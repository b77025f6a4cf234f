"""Fixtures of the black-box tests; the stack itself comes from the jobprogress pytest plugin."""

from __future__ import annotations

import pytest

from jobprogress_core.stack import Stack


@pytest.fixture
def queue_url(jobprogress_stack: Stack) -> str:
    return jobprogress_stack.url("job-queue-service")


@pytest.fixture
def progress_url(jobprogress_stack: Stack) -> str:
    return jobprogress_stack.url("progress-service")
