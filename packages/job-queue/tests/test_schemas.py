"""The job request schema: defaults, ranges, and errors that name the fields."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from job_queue_service.schemas import JobRequestSchema

schema = JobRequestSchema()


def test_defaults_make_a_two_minute_build() -> None:
    assert schema.load({}) == {
        "type": "build",
        "name": None,
        "steps": 4,
        "duration_seconds": 120.0,
        "fail_at_step": None,
        "time_limit_seconds": None,
        "runner": "worker",
        "steps_given": False,
    }


def test_full_request() -> None:
    loaded = schema.load(
        {
            "type": "import",
            "name": "Nightly",
            "steps": 10,
            "durationSeconds": 2.5,
            "failAtStep": 10,
            "timeLimitSeconds": 60,
        }
    )
    assert loaded == {
        "type": "import",
        "name": "Nightly",
        "steps": 10,
        "duration_seconds": 2.5,
        "fail_at_step": 10,
        "time_limit_seconds": 60.0,
        "runner": "worker",
        "steps_given": True,
    }


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({"type": "mine"}, {"type": ["Must be one of: build, import, report."]}),
        ({"steps": 0}, {"steps": ["Must be greater than or equal to 1 and less than or equal to 100."]}),
        ({"steps": 101}, {"steps": ["Must be greater than or equal to 1 and less than or equal to 100."]}),
        ({"steps": 2.5}, {"steps": ["Not a valid integer."]}),
        ({"steps": "3"}, {"steps": ["Not a valid integer."]}),
        ({"steps": True}, {"steps": ["Not a valid integer."]}),
        ({"durationSeconds": True}, {"durationSeconds": ["Not a valid number."]}),
        (
            {"durationSeconds": 0},
            {"durationSeconds": ["Must be greater than or equal to 0.1 and less than or equal to 86400."]},
        ),
        (
            {"durationSeconds": "NaN"},
            {"durationSeconds": ["Special numeric values (nan or infinity) are not permitted."]},
        ),
        ({"steps": 3, "failAtStep": 4}, {"failAtStep": ["Must be at most steps (3)."]}),
        (
            {"failAtStep": 0},
            {"failAtStep": ["Must be greater than or equal to 1 and less than or equal to 100."]},
        ),
        ({"name": "x" * 201}, {"name": ["Length must be between 1 and 200."]}),
        ({"extra": 1}, {"extra": ["Unknown field."]}),
        (
            {"timeLimitSeconds": 0.5},
            {"timeLimitSeconds": ["Must be greater than or equal to 1 and less than or equal to 2592000."]},
        ),
        ("a string", {"_schema": ["Invalid input type."]}),
    ],
)
def test_errors_name_the_fields(payload: Any, errors: dict[str, list[str]]) -> None:
    with pytest.raises(ValidationError) as caught:
        schema.load(payload)
    assert caught.value.normalized_messages() == errors
