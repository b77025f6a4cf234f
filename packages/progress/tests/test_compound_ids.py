"""Compound IDs: every position survives the trip, in a few characters each; anything a
server could not have written is refused."""

from __future__ import annotations

import random

import pytest

from progress_service.compound_ids import (
    DONE,
    MAX_ID_LENGTH,
    Encoder,
    MalformedId,
    parse_compound_id,
    smallest_ms,
)


def test_positions_of_a_jobs_stream_round_trip() -> None:
    positions: list[str | None] = ["1732712345678-0", None, DONE, "1732712345001-7", "1732712399999-0"]
    encoder = Encoder(smallest_ms(positions, default=0))
    tokens = [DONE if p == DONE else encoder.position(p) for p in positions]
    value = encoder.jobs_id(tokens)
    assert value == "Jm3zw6y09:it,~,*,0.7,16fq"
    parsed = parse_compound_id(value)
    assert (parsed.kind, parsed.positions) == ("J", positions)


def test_a_mine_id_carries_the_feed_and_each_jobs_handle() -> None:
    encoder = Encoder(1_700_000_000_000)
    feed, handle, position = "1700000000500-0", "1700000000100-2", "1699999999000-0"  # an earlier clock
    value = encoder.mine_id(
        encoder.position(feed), [f"{encoder.position(handle)}_{encoder.position(position)}"]
    )
    parsed = parse_compound_id(value)
    assert parsed.kind == "M" and parsed.feed == feed
    assert parsed.handles == [handle] and parsed.positions == [position]
    assert parse_compound_id(encoder.mine_id("~", [])).feed is None


def test_fifty_running_jobs_take_a_few_characters_each() -> None:
    rng = random.Random(3)
    now = 1_764_000_000_000
    positions: list[str | None] = [
        f"{now + rng.randrange(7_200_000)}-{rng.choice([0, 0, 0, 1])}" for _ in range(50)
    ]
    encoder = Encoder(smallest_ms(positions, default=now))
    value = encoder.jobs_id([encoder.position(p) for p in positions])
    assert parse_compound_id(value).positions == positions
    assert len(value) <= 50 * 7 + 12  # against 50 x 16 for the entry IDs themselves


@pytest.mark.parametrize(
    "value",
    [
        "",
        "X1:0",
        "1732712345678-0",
        "J:0",
        "J-1:0",
        "Jzz:0,!",
        "J1:0.",
        "J1:0.0",  # a sequence of 0 is never written
        "J1:" + "z" * 15,
        "Jzzzzzzzzzzzzz:zzzzzzzzzzzzz",  # past 2**64 - 1
        "M1:0",  # no list of jobs
        "M1:*:",  # the feed is never done
        "M1:0:5",  # a job without a handle
        "M1:0:*_0",
        "M1:0:5_~,5_~",  # one job twice
        "M1:0:6_~,5_~",  # not in the feed's order
        "J1:" + ",".join(["0"] * MAX_ID_LENGTH),
    ],
)
def test_anything_else_is_malformed(value: str) -> None:
    with pytest.raises(MalformedId):
        parse_compound_id(value)
