"""The wire format: exact SSE bytes of every event type, stream IDs, the job hash."""

from __future__ import annotations

import pytest

from jobprogress_core.model import (
    Event,
    EventType,
    Job,
    JobStatus,
    encode_sse,
    parse_stream_id,
    stream_id_after,
    valid_job_id,
)

JOB = "0123456789abcdef0123456789abcdef"
TS = "2026-11-27T10:00:00.000Z"


@pytest.mark.parametrize(
    ("event_type", "data", "expected"),
    [
        (
            EventType.STATUS,
            {"jobId": JOB, "status": "QUEUED", "message": "Waiting for a worker", "ts": TS},
            b'id: 1732712345678-0\nevent: status\ndata: {"jobId":"'
            + JOB.encode()
            + b'","status":"QUEUED","message":"Waiting for a worker","ts":"'
            + TS.encode()
            + b'"}\n\n',
        ),
        (
            EventType.PROGRESS,
            {
                "jobId": JOB,
                "status": "PROCESSING",
                "progress": 25,
                "message": "Step 1/4 complete",
                "step": 1,
                "totalSteps": 4,
                "ts": TS,
            },
            b'id: 1732712345678-0\nevent: progress\ndata: {"jobId":"'
            + JOB.encode()
            + b'","status":"PROCESSING","progress":25,"message":"Step 1/4 complete","step":1,"totalSteps":4,'
            + b'"ts":"'
            + TS.encode()
            + b'"}\n\n',
        ),
        (
            EventType.LOG,
            {"jobId": JOB, "level": "info", "line": "Processing file data.csv...", "ts": TS},
            b'id: 1732712345678-0\nevent: log\ndata: {"jobId":"'
            + JOB.encode()
            + b'","level":"info","line":"Processing file data.csv...","ts":"'
            + TS.encode()
            + b'"}\n\n',
        ),
        (
            EventType.COMPLETE,
            {"jobId": JOB, "status": "COMPLETED", "progress": 100, "result": "Success!", "ts": TS},
            b'id: 1732712345678-0\nevent: complete\ndata: {"jobId":"'
            + JOB.encode()
            + b'","status":"COMPLETED","progress":100,"result":"Success!","ts":"'
            + TS.encode()
            + b'"}\n\n',
        ),
        (
            EventType.FAILED,
            {"jobId": JOB, "status": "FAILED", "progress": 50, "error": "Step 2/4 failed", "ts": TS},
            b'id: 1732712345678-0\nevent: failed\ndata: {"jobId":"'
            + JOB.encode()
            + b'","status":"FAILED","progress":50,"error":"Step 2/4 failed","ts":"'
            + TS.encode()
            + b'"}\n\n',
        ),
        (
            EventType.CANCELLED,
            {"jobId": JOB, "status": "CANCELLED", "ts": TS},
            b'id: 1732712345678-0\nevent: cancelled\ndata: {"jobId":"'
            + JOB.encode()
            + b'","status":"CANCELLED","ts":"'
            + TS.encode()
            + b'"}\n\n',
        ),
    ],
    ids=lambda value: value.value if isinstance(value, EventType) else "",
)
def test_exact_sse_bytes(event_type: EventType, data: dict[str, object], expected: bytes) -> None:
    assert Event("1732712345678-0", event_type, data).sse == expected


def test_reset_event_has_no_id_and_unicode_is_utf8() -> None:
    assert encode_sse("reset", '{"line":"caf\u00e9 \u2713"}') == (
        b'event: reset\ndata: {"line":"caf\xc3\xa9 \xe2\x9c\x93"}\n\n'
    )


def test_log_line_with_newlines_and_html_stays_one_data_line() -> None:
    event = Event("1-0", EventType.LOG, {"line": "a\nb\r\n<script>alert(1)</script>"})
    assert event.sse == b'id: 1-0\nevent: log\ndata: {"line":"a\\nb\\r\\n<script>alert(1)</script>"}\n\n'
    with pytest.raises(ValueError, match="single line"):
        encode_sse("log", "two\nlines")


def test_event_round_trips_through_a_stream_entry() -> None:
    event = Event.from_entry("5-1", {"type": "progress", "data": '{"jobId":"x","progress":5}'})
    assert event == Event("5-1", EventType.PROGRESS, {"jobId": "x", "progress": 5})
    assert event.type.terminal is False
    assert {t for t in EventType if t.terminal} == {EventType.COMPLETE, EventType.FAILED, EventType.CANCELLED}


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("0-0", (0, 0)),
        ("1732712345678-0", (1732712345678, 0)),
        ("18446744073709551615-18446744073709551615", (2**64 - 1, 2**64 - 1)),
    ],
)
def test_valid_stream_ids(value: str, parsed: tuple[int, int]) -> None:
    assert parse_stream_id(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",
        "1-",
        "-1",
        "a-1",
        "1-a",
        "1-2-3",
        " 1-0",
        "1-0\n",
        "+1-0",
        "1.0-0",
        "\u0661-0",
        "\uff11-0",
        "18446744073709551616-0",
        "0-18446744073709551616",
        "1" * 21 + "-0",
        "$",
        ">",
        "*",
        "1-*",
    ],
)
def test_malformed_stream_ids(value: str) -> None:
    with pytest.raises(ValueError, match="stream ID"):
        parse_stream_id(value)


def test_stream_id_order_is_numeric_not_lexical() -> None:
    assert stream_id_after("10-0", "9-0")
    assert stream_id_after("9-10", "9-9")
    assert not stream_id_after("9-9", "9-9")


def test_job_ids() -> None:
    assert valid_job_id("0123456789abcdef0123456789abcdef")
    for bad in ("", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcde", "../x", "g" * 32):
        assert not valid_job_id(bad)


def test_job_hash_round_trip_and_public_view() -> None:
    job = Job(
        id=JOB,
        owner="alice",
        type="build",
        name="n",
        params={"steps": 2},
        status=JobStatus.PROCESSING,
        progress=50,
        step=1,
        total_steps=2,
        created_at=TS,
        worker="w1",
        attempts=1,
        last_event_id="3-0",
    )
    assert Job.from_hash(job.to_hash()) == job
    view = job.to_json()
    assert view["jobId"] == JOB and view["totalSteps"] == 2 and view["result"] is None
    assert "owner" not in view
    assert JobStatus.COMPLETED.terminal and not JobStatus.QUEUED.terminal
