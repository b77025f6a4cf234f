"""The external job request and the reported events: defaults, and errors that name the fields."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from job_queue_service.report_schemas import MAX_BATCH, load_events
from job_queue_service.schemas import JobRequestSchema


def test_an_external_job_takes_any_type_name() -> None:
    loaded = JobRequestSchema().load({"runner": "external", "type": "nightly-etl"})
    assert (loaded["runner"], loaded["type"], loaded["steps_given"]) == ("external", "nightly-etl", False)
    assert JobRequestSchema().load({"runner": "external"})["type"] == "external"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"runner": "cron"}, {"runner"}),
        ({"runner": "external", "durationSeconds": 5}, {"durationSeconds"}),
        ({"runner": "external", "type": "Bad Name"}, {"type"}),
        ({"type": "nightly-etl"}, {"type"}),
    ],
)
def test_bad_external_requests_name_the_field(body: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        JobRequestSchema().load(body)
    assert set(caught.value.normalized_messages()) == fields  # type: ignore[no-untyped-call]


def test_every_type_with_its_fields() -> None:
    events = load_events(
        {
            "events": [
                {"type": "status", "message": "Started"},
                {"type": "progress", "step": 1, "totalSteps": 4, "key": "p1"},
                {"type": "log", "line": "hello"},
                {"type": "step", "stepId": "s1", "name": "Compile", "status": "running",
                 "startedAt": "2024-01-01T00:00:00Z"},
                {"type": "metric", "metrics": [{"key": "loss", "value": 0.5}, {"key": "acc", "value": 1}],
                 "step": 3},
                {"type": "artifact", "name": "report", "kind": "link", "url": "https://example.com/r",
                 "mime": "text/html", "size": 10},
                {"type": "annotation", "level": "warning", "message": "3 tests skipped", "title": "Tests"},
                {"type": "progress", "progress": 50, "etaSeconds": 30},
                {"type": "complete", "result": "ok"},
            ]
        }
    )  # fmt: skip
    assert [event["type"] for event in events] == [
        "status", "progress", "log", "step", "metric", "artifact", "annotation", "progress", "complete",
    ]  # fmt: skip
    assert events[6]["title"] == "Tests" and events[7]["eta_seconds"] == 30
    assert events[2]["level"] == "info" and events[1]["key"] == "p1"
    assert load_events({"type": "failed"}) == [{"type": "failed", "error": "Reported as failed"}]


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"type": "reset"}, {"type": ["Must be one of: status, progress, log, step, metric, artifact, "
                                      "annotation, complete, failed, cancelled."]}),
        ([1], {"_schema": ["Each event must be an object."]}),
        ({"type": "log"}, {"line": ["Missing data for required field."]}),
        ({"type": "log", "line": "x", "level": "loud"},
         {"level": ["Must be one of: debug, info, warning, error."]}),
        ({"type": "log", "line": "x", "extra": 1}, {"extra": ["Unknown field."]}),
        ({"type": "progress", "message": "x"}, {"progress": ["Give progress, or step and totalSteps."]}),
        ({"type": "progress", "progress": 101}, {"progress": ["Must be greater than or equal to 0 and less "
                                                              "than or equal to 100."]}),
        ({"type": "progress", "step": 5, "totalSteps": 4}, {"step": ["Must be at most totalSteps (4)."]}),
        ({"type": "progress", "progress": True}, {"progress": ["Not a valid integer."]}),
        ({"type": "status", "message": "x", "status": "COMPLETED"},
         {"status": ["Must be equal to PROCESSING."]}),
        ({"type": "step", "stepId": "s", "status": "done"}, {"status": ["Must be one of: running, completed, "
                                                                        "failed, skipped, cancelled."]}),
        ({"type": "step", "stepId": "s", "status": "running", "endedAt": "soon"},
         {"endedAt": ["Not an ISO 8601 timestamp."]}),
        ({"type": "metric", "metrics": [{"key": "a", "value": "1"}]},
         {"metrics": {0: {"value": ["Not a valid number."]}}}),
        ({"type": "metric", "metrics": [{"key": "a", "value": 1}, {"key": "a", "value": 2}]},
         {"metrics": ["Each key at most once per event."]}),
        ({"type": "metric", "metrics": []}, {"metrics": ["Length must be between 1 and 100."]}),
        ({"type": "artifact", "name": "x", "url": "javascript:alert(1)"}, {"url": ["Not a valid URL."]}),
        ({"type": "artifact", "name": "x", "url": "https://e.com", "kind": "video"},
         {"kind": ["Must be one of: file, image, link, table."]}),
        ({"type": "log", "line": "x", "key": ""}, {"key": ["Length must be between 1 and 200."]}),
        ({"type": "annotation", "message": "x", "level": "info"},
         {"level": ["Must be one of: notice, warning, error."]}),
        ({"type": "annotation", "level": "warning"}, {"message": ["Missing data for required field."]}),
        ({"type": "annotation", "message": "x" * 1001}, {"message": ["Length must be between 1 and 1000."]}),
        ({"type": "progress", "progress": 5, "etaSeconds": -1},
         {"etaSeconds": ["Must be greater than or equal to 0 and less than or equal to 10000000."]}),
        ({"events": []}, {"events": [f"Must be a list of 1 to {MAX_BATCH} events."]}),
        ({"events": [{"type": "log", "line": "x"}] * (MAX_BATCH + 1)},
         {"events": [f"Must be a list of 1 to {MAX_BATCH} events."]}),
        ({"events": [{"type": "log", "line": "x"}], "more": 1}, {"more": ["Unknown field."]}),
        ({"events": [{"type": "complete"}, {"type": "log", "line": "x"}]},
         {"events": {0: {"type": ["A final event must be the last of its batch."]}}}),
        ({"events": [{"type": "log", "line": "x", "key": "k"}, {"type": "log", "line": "y", "key": "k"}]},
         {"events": ["Each key at most once per batch."]}),
        ({"events": [{"type": "log", "line": "x"}, {"type": "log"}]},
         {"events": {1: {"line": ["Missing data for required field."]}}}),
    ],
)  # fmt: skip
def test_invalid_events_name_the_field(body: Any, details: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        load_events(body)
    assert caught.value.normalized_messages() == details  # type: ignore[no-untyped-call]
