"""What this service writes on an SSE stream, byte for byte.

An event goes out as its log entry holds it: the entry's ``data`` is already one line of
compact JSON (the worker wrote it with :func:`jobprogress_core.model.dumps`), so it is
framed as it is, never decoded and encoded again. Its bytes are made once per process and
shared by every client: as SSE text, and as one HTTP/1.1 chunk for the hub's writes
straight to a chunked response's transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from jobprogress_core.model import EventType, Job, dumps, encode_sse

__all__ = ["HEARTBEAT", "Frame", "http_chunk", "reset_frame", "retry_frame"]

#: The comment line that keeps an idle stream open (and finds out whether the client left).
HEARTBEAT = b": ping\n\n"


@dataclass(frozen=True)
class Frame:
    """One event of a job's log as this service passes it on; ``id`` is its stream entry ID
    and ``data`` its JSON text, as stored."""

    id: str
    type: EventType
    data: str

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Frame:
        """A stream entry (fields ``type`` and ``data``) as it goes out."""
        return cls(id=entry_id, type=EventType(fields["type"]), data=fields["data"])

    @cached_property
    def sse(self) -> bytes:
        """The exact bytes of this event on an SSE stream."""
        return encode_sse(self.type, self.data, event_id=self.id)

    @cached_property
    def unnamed(self) -> bytes:
        """:attr:`sse` without its ``id`` line: what a stream of many jobs sends after an ID
        of its own (``b"id: <ID>\\n"``)."""
        return encode_sse(self.type, self.data)

    @cached_property
    def chunk(self) -> bytes:
        """:attr:`sse` as one HTTP/1.1 chunk, for writing straight to a chunked response."""
        return http_chunk(self.sse)


def http_chunk(payload: bytes) -> bytes:
    """``payload`` framed as one chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def retry_frame(retry_ms: int) -> bytes:
    """The ``retry:`` line a stream opens with: how long EventSource waits to reconnect."""
    return f"retry: {retry_ms}\n\n".encode()


def reset_frame(job: Job) -> bytes:
    """The ``reset`` event (no ``id``): the job's snapshot, for a client whose last event has
    left the log."""
    return encode_sse(EventType.RESET.value, dumps(job.to_json()))
