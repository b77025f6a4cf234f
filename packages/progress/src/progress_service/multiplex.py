"""A stream of many jobs on one connection: where it stands in each, as one compound ID.

Each job of the stream (and, for a ``mine`` stream, the caller's feed of new jobs) is a
:class:`Member`: a :class:`Viewer` of the hub like any single stream's, so the hub's readers,
cursors and seam work unchanged, except that the hub writes each event to it on its own
(:attr:`Viewer.per_event`): the event goes out with the stream's compound ID
(:mod:`.compound_ids`) as it stands once that event is written, not with the job's entry ID.
Both writers (the hub, and the stream's task catching a member up from the log) frame through
:meth:`Multiplex.frame`, with no ``await`` between framing and writing, so the IDs a client
receives follow the order of the bytes on the wire: the last ID it has resumes every job.

The feed's entries are never sent: each names a new job, which joins the stream (from the
start of its log) with the entry as its handle. When the hub lets a member go, the member is
put on the stream's list of endings and the stream's task wakes up to deal with it.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from .compound_ids import DONE, JOBS, Encoder
from .frames import Frame, http_chunk
from .viewer import Ending, Viewer

__all__ = ["Member", "Multiplex"]


class Member(Viewer):
    """One job of a stream of many, or a ``mine`` stream's feed."""

    __slots__ = ("done", "handle", "index", "multiplex")
    per_event = True

    def __init__(
        self, multiplex: Multiplex, topic: str, *, last_id: str | None = None, handle: str | None = None
    ) -> None:
        super().__init__(topic, last_id=last_id)
        self.multiplex = multiplex
        #: Its handle in a ``mine`` stream's ID (the job's entry in the feed), encoded, and a
        #: separator: what comes before its position there.
        self.handle = "" if handle is None else multiplex.encoder.position(handle) + "_"
        #: Its place in the stream's ID (``-1``: the feed's own).
        self.index = -1
        #: Its terminal event went out: it has left the stream.
        self.done = False

    def write_live(self, chunk: bytes, plain: bytes, last: Frame, now: float, *, limit: int) -> bool:
        """The hub's write of one event (``last``; the shared bytes are not this stream's)."""
        transport = self.writable(limit)
        if transport is None:
            return False
        payload = self.multiplex.frame(self, last)
        self.record(last, now)
        if payload is None:
            return False
        transport.write(http_chunk(payload) if self.chunked else payload)
        self.multiplex.wrote(now, event=True)
        if last.type.terminal:
            self.end(Ending.COMPLETE)
        return True

    def end(self, ending: Ending) -> None:
        if self.ending is None:
            super().end(ending)
            self.multiplex.ended(self)


class Multiplex:
    """The members of one stream of many jobs, in the order of its ID, and what its task
    has to deal with: members the hub let go, and jobs the feed announced."""

    def __init__(self, kind: str, encoder: Encoder, *, most: int = 100) -> None:
        self.kind = kind
        self.encoder = encoder
        #: The most jobs a ``mine`` stream follows at once: past it, the feed's next jobs
        #: wait (the ID's feed position stays before them) until one of those leaves.
        self.most = most
        self._waiting: deque[Frame] = deque()
        #: The jobs, in ID order: for ``J`` the URL's (done ones stay, as ``*``); for ``M`` the
        #: order they joined in (done ones leave).
        self.members: list[Member] = []
        #: Each member's part of the ID (its handle and position), kept as members move on,
        #: so that framing an event costs one join.
        self.tokens: list[str] = []
        self.feed: Member | None = None
        self._feed_token = ""
        #: Every member the stream had, left or not: all are unsubscribed at its end.
        self.everyone: list[Member] = []
        self.jobs: set[str] = set()
        #: Members the hub let go, and jobs announced by the feed, not yet dealt with.
        self.endings: list[Member] = []
        self.joined: list[Member] = []
        self._changed = asyncio.Event()
        self.last_write_at = self.last_event_at = asyncio.get_running_loop().time()

    def add(
        self, job_id: str, *, last_id: str | None = None, handle: str | None = None, shown: str | None = None
    ) -> Member:
        """A new member at ``last_id``; its position in the ID is ``shown`` if given (a job
        whose ``reset`` is still to be written keeps its old position until then)."""
        member = Member(self, job_id, last_id=last_id, handle=handle)
        self.everyone.append(member)
        member.index = len(self.members)
        self.members.append(member)
        self.tokens.append(member.handle + self.encoder.position(shown or last_id))
        self.jobs.add(job_id)
        return member

    def reset_written(self, member: Member) -> None:
        """``member``'s ``reset`` went out: from now on it resumes from its log's start."""
        self.tokens[member.index] = member.handle + self.encoder.position(None)

    def mark_done(self, member: Member) -> None:
        """``member``'s terminal event is written (or was, before the stream opened): a ``J``
        ID keeps it as done, an ``M`` ID leaves it out."""
        member.done = True
        if self.kind == JOBS:
            self.tokens[member.index] = DONE
            return
        del self.members[member.index]
        del self.tokens[member.index]
        for index in range(member.index, len(self.members)):
            self.members[index].index = index
        while self._waiting and len(self.members) < self.most:
            self._announce(self._waiting.popleft())

    def follow_feed(self, topic: str, position: str) -> Member:
        self.feed = Member(self, topic, last_id=position)
        self.everyone.append(self.feed)
        self._feed_token = self.encoder.position(position)
        return self.feed

    @property
    def open_members(self) -> list[Member]:
        return [member for member in self.members if not member.done]

    def compound_id(self) -> str:
        if self.kind == JOBS:
            return self.encoder.jobs_id(self.tokens)
        return self.encoder.mine_id(self._feed_token, self.tokens)

    def frame(self, member: Member, frame: Frame) -> bytes | None:
        """The bytes of ``frame`` on this stream, with the ID as it stands once it is written
        (``member`` moved on to it); ``None`` for the feed's entries, which are not sent."""
        if member is self.feed:
            if self._waiting or len(self.members) >= self.most:
                self._waiting.append(frame)  # the ID's feed position stays before it
            else:
                self._announce(frame)
            return None
        if frame.type.terminal:
            self.mark_done(member)
        else:
            self.tokens[member.index] = member.handle + self.encoder.position(frame.id)
        return b"id: %s\n%s" % (self.compound_id().encode(), frame.unnamed)

    def _announce(self, entry: Frame) -> None:
        """A job the feed named joins, and the ID's feed position moves past its entry."""
        self._feed_token = self.encoder.position(entry.id)
        job_id = json.loads(entry.data).get("jobId")
        if isinstance(job_id, str) and job_id not in self.jobs:
            self.joined.append(self.add(job_id, handle=entry.id))
            self._changed.set()

    def wrote(self, now: float, *, event: bool) -> None:
        self.last_write_at = now
        if event:
            self.last_event_at = now

    def ended(self, member: Member) -> None:
        self.endings.append(member)
        self._changed.set()

    def take(self) -> tuple[list[Member], list[Member]]:
        """The members let go and the jobs joined since the last call."""
        endings, joined = self.endings, self.joined
        self.endings, self.joined = [], []
        self._changed.clear()
        return endings, joined

    async def wait(self, timeout: float) -> None:
        """Until a member is let go or a job joins, or ``timeout`` seconds pass."""
        if not self._changed.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass
