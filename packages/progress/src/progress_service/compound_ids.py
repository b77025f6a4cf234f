"""The SSE ``id`` of a stream of many jobs: the position of every job of the stream in one
short string, so that one ``Last-Event-ID`` resumes all of them exactly.

A position is a stream entry ID (``<ms>-<seq>``), or *none yet* (the job's log from its
start), or *done* (its terminal event was sent). Entry IDs are written as the difference of
their milliseconds from a base (the smallest in the ID when the stream opened), in base 36,
and their sequence only when it is not 0: the positions of jobs that are running now lie
within seconds or hours of each other, so each takes a few characters, not twenty.

Two kinds, told apart by their first letter:

``J<base>:<p1>,<p2>,...``
    ``GET /api/progress?job=...``: one position per job, in the order of the URL's ``job``
    parameters (which a reconnecting EventSource sends again as they were).
``M<base>:<feed>:<h1>_<p1>,<h2>_<p2>,...``
    ``GET /api/progress/mine``: the position in the caller's feed of new jobs, then each job
    the stream follows, named by its entry in that feed (its *handle*), with its position.
    A job leaves the list with its terminal event.

A position is ``~`` for none yet, ``*`` for done, else ``<delta>`` or ``<delta>.<seq>``, a
delta that may be negative (``-`` first): the jobs' entry IDs come from the clocks of
different Redis masters on a cluster. The alphabet is ``[0-9a-z~*._,:-]``, all of it safe
in a header and in a URL query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from jobprogress_core.model import parse_stream_id

__all__ = [
    "DONE",
    "MAX_ID_LENGTH",
    "NONE_YET",
    "CompoundId",
    "Encoder",
    "MalformedId",
    "parse_compound_id",
    "smallest_ms",
]

NONE_YET: Final = "~"
DONE: Final = "*"
JOBS: Final = "J"
MINE: Final = "M"
#: Longer IDs are refused as malformed, before anything is parsed: room for the longest ID of
#: the most jobs a stream follows (``M`` streams: at most 100, each within 62 characters), and
#: within the 8190 bytes of a header line aiohttp accepts.
MAX_ID_LENGTH = 8000
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_UINT64_MAX = 2**64 - 1


def base36(number: int) -> str:
    if number < 0:
        return "-" + base36(-number)
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_DIGITS[digit])
        if not number:
            return "".join(reversed(digits))


class Encoder:
    """Writes positions against one base (fixed for the life of a connection)."""

    __slots__ = ("base", "head")

    def __init__(self, base: int) -> None:
        self.base = base
        self.head = base36(base)

    def position(self, entry_id: str | None) -> str:
        if entry_id is None:
            return NONE_YET
        ms, _, seq = entry_id.partition("-")
        delta = base36(int(ms) - self.base)
        return delta if seq == "0" else f"{delta}.{base36(int(seq))}"

    def jobs_id(self, positions: list[str]) -> str:
        return f"{JOBS}{self.head}:{','.join(positions)}"

    def mine_id(self, feed: str, handles_and_positions: list[str]) -> str:
        return f"{MINE}{self.head}:{feed}:{','.join(handles_and_positions)}"


@dataclass
class CompoundId:
    """A parsed compound ID. Positions are entry IDs, ``None`` (none yet) or :data:`DONE`."""

    kind: str
    base: int
    positions: list[str | None]
    #: For ``M`` IDs: the feed's position, and each job's handle (aligned with positions).
    feed: str | None = None
    handles: list[str] = field(default_factory=list)


def smallest_ms(entry_ids: list[str | None], default: int) -> int:
    """The base for an ID of these entries: the smallest millisecond among them."""
    found = [
        int(entry_id.partition("-")[0])
        for entry_id in entry_ids
        if entry_id and entry_id not in (DONE, "0-0")
    ]
    return min(found, default=default)


class MalformedId(ValueError):
    """Not an ID that :class:`Encoder` could have written."""


def parse_compound_id(value: str) -> CompoundId:
    """:class:`MalformedId` for anything but an ID :class:`Encoder` could have written."""
    try:
        return _parse(value)
    except ValueError as exc:
        raise MalformedId(str(exc)) from None


def _parse(value: str) -> CompoundId:
    if len(value) > MAX_ID_LENGTH:
        raise ValueError("compound ID too long")
    kind, body = value[:1], value[1:]
    if kind not in (JOBS, MINE):
        raise ValueError("not a compound ID")
    head, _, rest = body.partition(":")
    base = _number(head)
    if base < 0:
        raise ValueError("negative base")
    if kind == JOBS:
        tokens = rest.split(",") if rest else []
        return CompoundId(kind, base, [_position(token, base) for token in tokens])
    feed_token, colon, listed = rest.partition(":")
    if not colon:
        raise ValueError("no feed position")
    feed = _position(feed_token, base)
    if feed == DONE:
        raise ValueError("the feed is never done")
    handles: list[str] = []
    positions: list[str | None] = []
    for pair in listed.split(",") if listed else []:
        handle_token, underscore, position_token = pair.partition("_")
        handle = _position(handle_token, base) if underscore else None
        if handle is None or handle == DONE:
            raise ValueError("a job without a handle")
        if handles and not parse_stream_id(handle) > parse_stream_id(handles[-1]):
            raise ValueError("handles out of order")  # the feed's order, each job once
        handles.append(handle)
        positions.append(_position(position_token, base))
    return CompoundId(kind, base, positions, feed=feed, handles=handles)


def _position(token: str, base: int) -> str | None:
    if token == NONE_YET:
        return None
    if token == DONE:
        return DONE
    delta, dot, seq = token.partition(".")
    ms = base + _number(delta)
    sequence = _number(seq) if dot else 0
    if not 0 <= ms <= _UINT64_MAX or not 0 <= sequence <= _UINT64_MAX or (dot and sequence == 0):
        raise ValueError("position out of range")
    entry_id = f"{ms}-{sequence}"
    parse_stream_id(entry_id)
    return entry_id


def _number(token: str) -> int:
    digits = token.removeprefix("-")
    if not digits or len(digits) > 14 or any(char not in _DIGITS for char in digits):
        raise ValueError(f"not a base-36 number: {token[:20]!r}")
    return int(token, 36)
