"""The state of a stream of many jobs, without a hub: the compound ID as members move on, a
``reset`` that keeps a job's old position until it is written, and the most jobs a ``mine``
stream follows (the feed's next jobs wait, its position with them)."""

from __future__ import annotations

from jobprogress_core.model import EventType, dumps
from progress_service.compound_ids import JOBS, MINE, Encoder, parse_compound_id
from progress_service.frames import Frame
from progress_service.multiplex import Multiplex


def entry(entry_id: str, event_type: EventType = EventType.LOG, **data: object) -> Frame:
    return Frame(entry_id, event_type, dumps({"jobId": "j", **data}))


def feed_entry(entry_id: str, job_id: str) -> Frame:
    return Frame(entry_id, EventType.STATUS, dumps({"jobId": job_id}))


async def test_a_reset_keeps_the_old_position_in_the_id_until_it_is_written() -> None:
    multiplex = Multiplex(JOBS, Encoder(1000))
    first = multiplex.add("a", last_id="1005-0")
    trimmed = multiplex.add("b", last_id=None, shown="1002-0")  # its reset is still to be sent
    payload = multiplex.frame(first, entry("1006-0"))
    assert payload is not None and payload.startswith(b"id: ")
    assert parse_compound_id(multiplex.compound_id()).positions == ["1006-0", "1002-0"]
    multiplex.reset_written(trimmed)
    assert parse_compound_id(multiplex.compound_id()).positions == ["1006-0", None]


async def test_a_mine_stream_follows_at_most_its_most_jobs_and_the_rest_wait_in_the_feed() -> None:
    multiplex = Multiplex(MINE, Encoder(1000), most=2)
    feed = multiplex.follow_feed("feed:me", "1000-0")
    for n, job_id in enumerate(("a", "b", "c"), start=1):
        assert multiplex.frame(feed, feed_entry(f"100{n}-0", job_id)) is None  # never sent
    _, joined = multiplex.take()
    assert [member.job_id for member in joined] == ["a", "b"]
    parsed = parse_compound_id(multiplex.compound_id())
    assert parsed.feed == "1002-0"  # before c: a reconnect now reads c from the feed again
    assert parsed.handles == ["1001-0", "1002-0"]
    a = joined[0]
    multiplex.frame(a, entry("1010-0", EventType.COMPLETE, result="ok"))  # a leaves: c joins
    _, joined = multiplex.take()
    assert [member.job_id for member in joined] == ["c"]
    parsed = parse_compound_id(multiplex.compound_id())
    assert parsed.feed == "1003-0" and parsed.handles == ["1002-0", "1003-0"]
    assert multiplex.frame(feed, feed_entry("1004-0", "b")) is None  # at most 2: it waits
    assert parse_compound_id(multiplex.compound_id()).feed == "1003-0"
    b = joined_b = multiplex.members[0]
    assert joined_b.job_id == "b"
    multiplex.frame(b, entry("1011-0", EventType.FAILED, error="x"))  # b leaves: its entry is read
    assert multiplex.take()[1] == []  # b had joined once already: it does not join again
    parsed = parse_compound_id(multiplex.compound_id())
    assert parsed.feed == "1004-0" and parsed.handles == ["1003-0"]
