"""The stream's inputs fuzzed: odd, huge, unicode and path-tricky job IDs and Last-Event-IDs
(as the header and as the query parameter) get an answer at once: a 4xx, or for the caller's
own finished job and a well-formed ID its stream or 204. Never a 5xx, never a hung request.
So do odd credentials (bearer tokens, cookies, share tokens, ``Origin``) on every kind of call.

The requests are plain ``http.client`` calls, so the bytes sent are exactly the ones chosen."""

from __future__ import annotations

import http.client
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobprogress_core.model import EventType
from jobprogress_core.store import JobStore
from jobprogress_testing import bearer_headers

pytestmark = pytest.mark.stack

TRICKY_IDS = [
    "",
    ".",
    "..",
    "../../etc/passwd",
    "%2e%2e%2f",
    "0" * 32,
    "f" * 31 + "g",
    "F" * 32,
    "a" * 5000,
    "\u202e" + "0" * 31,
    "𝔧𝔬𝔟",
    " " * 32,
    "null",
    "{job}",
    "*",
    "job:{x}:events",
]
TRICKY_LAST_IDS = [
    "0-0",
    "-",
    "1-",
    "-1",
    "1--1",
    "18446744073709551616-0",
    "18446744073709551615-18446744073709551615",
    "1" * 4000 + "-0",
    "9999999999999-0",
    "1.5-0",
    "0x10-0",
    "１２３-０",
    "1-0 ",
    " ",
    "$",
    "+",
    "*",
    ">",
    "1-0,2-0",
]
#: Reproducible (the same cases every run, nothing kept between runs), no per-case deadline:
#: each request has its own 5 s limit.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SAFE_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"), max_size=200)


@pytest.fixture
async def finished_job(new_job: Callable[[], Awaitable[str]], stack_store: JobStore) -> str:
    job_id = await new_job()
    for n in range(3):
        await stack_store.append(job_id, EventType.LOG, {"line": f"line {n}"})
    await stack_store.finish(job_id, EventType.COMPLETE, result="ok")
    return job_id


def get(url: str, path: str, headers: dict[str, Any]) -> int:
    return request(url, "GET", path, headers)


def request(url: str, method: str, path: str, headers: dict[str, Any]) -> int:
    """One request on a fresh connection, reading the whole answer; at most 5 s for anything."""
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@settings(FUZZ, max_examples=250)
@given(
    job_id=st.one_of(st.sampled_from(TRICKY_IDS), SAFE_TEXT, st.none()),
    last_id=st.one_of(st.none(), st.sampled_from(TRICKY_LAST_IDS), SAFE_TEXT),
    as_header=st.booleans(),
)
def test_stream_inputs_get_an_answer_never_a_5xx_or_a_hang(
    progress_url: str,
    finished_job: str,
    jobprogress_identity: str,
    job_id: str | None,
    last_id: str | None,
    as_header: bool,
) -> None:
    job_id = finished_job if job_id is None else job_id  # also the real job, with odd IDs
    path = f"/api/progress/{quote(job_id, safe='')}"
    headers: dict[str, Any] = bearer_headers(jobprogress_identity)
    if last_id is not None:
        if as_header:
            headers["Last-Event-ID"] = last_id.encode()
        else:
            path += f"?lastEventId={quote(last_id, safe='')}"
    try:
        status = get(progress_url, path, headers)
    except TimeoutError:
        raise AssertionError(f"no answer within 5 s: {path[:200]!r} {last_id!r:.200}") from None
    assert status < 500, (status, path[:200], last_id)
    if status < 400:
        assert job_id == finished_job and status in (200, 204), (status, path[:200], last_id)


CREDENTIAL_BYTES = st.one_of(
    st.sampled_from(
        [
            b"Bearer \xff\xfe",
            b"Bearer a.b.c",
            b"bearer",
            b"Bearer " + b"A" * 6000,
            b"\xc3\xa9",
            b"Basic Og==",
            b".",
        ]
    ),
    st.binary(max_size=200).filter(
        lambda value: b"\r" not in value and b"\n" not in value and b"\0" not in value
    ),
)


@settings(FUZZ, max_examples=150)
@given(
    authorization=st.one_of(st.none(), CREDENTIAL_BYTES),
    cookie=st.one_of(st.none(), CREDENTIAL_BYTES),
    share=st.one_of(st.none(), SAFE_TEXT),
    origin=st.one_of(st.none(), CREDENTIAL_BYTES, st.sampled_from([b"http://[::1", b"null", b"http://x:-1"])),
)
def test_odd_credentials_get_an_answer_never_a_5xx(
    progress_url: str,
    queue_url: str,
    finished_job: str,
    authorization: bytes | None,
    cookie: bytes | None,
    share: str | None,
    origin: bytes | None,
) -> None:
    """Authorization, the identity cookie, ``?share=`` and ``Origin`` as any bytes a client
    can send, on the stream, a job's status and a submission."""
    headers: dict[str, Any] = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if cookie is not None:
        headers["Cookie"] = b"jobprogress_identity=" + cookie
    if origin is not None:
        headers["Origin"] = origin
    query = "" if share is None else f"?share={quote(share, safe='')}"
    for base, path, method in (
        (progress_url, f"/api/progress/{finished_job}{query}", "GET"),
        (queue_url, f"/api/jobs/{finished_job}{query}", "GET"),
        (queue_url, "/api/jobs", "POST"),
        (progress_url, "/api/tokens", "POST"),
    ):
        try:
            status = request(base, method, path, headers)
        except TimeoutError:
            raise AssertionError(f"no answer within 5 s: {method} {path[:100]}") from None
        assert status < 500, (status, method, path[:100], headers)
