"""Reading a job's log for a client that catches up: its entries as frames, undecoded."""

from __future__ import annotations

from jobprogress_core.store import JobStore

from .frames import Frame

__all__ = ["REPLAY_PAGE", "log_frames"]

#: Entries read from the log in one ``XRANGE``.
REPLAY_PAGE = 500


async def log_frames(
    store: JobStore, job_id: str, after: str | None, *, until: str, count: int
) -> list[Frame]:
    """Up to ``count`` events of the job strictly after ``after`` (from the start if
    ``None``) up to ``until`` inclusive, without decoding what is only passed on."""
    entries = await store.entries(job_id, after, until=until, count=count)
    return [Frame.from_entry(entry_id, fields) for entry_id, fields in entries]
