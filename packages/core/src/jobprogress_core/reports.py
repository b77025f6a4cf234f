"""Events reported for an external job (``POST /api/jobs/{id}/events``), appended as the
worker appends its own: each event's stream entry and its change of the job's hash in one
atomic step, so ``GET /api/jobs/{id}`` and the stream never disagree.

A batch is appended in order by the Lua script the worker's appends use too
(``lua/append_events.lua``, :meth:`.JobStore.append_batch`): all of it, or nothing when the
job has ended. An event may carry an idempotency key; a key appended before for the same
job is skipped, so a reporter may retry a batch whose answer it lost. The keys are kept
beside the job (same hash tag), the latest ``keys_kept`` of them, and expire with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import now_iso
from .store import JobStore, NewEvent

__all__ = ["Report", "ReportOutcome", "Reports"]


@dataclass(frozen=True)
class Report:
    """One event to append: its type, its data (``jobId`` and ``ts`` are added), the job
    fields it sets, and its idempotency key."""

    type: str
    data: dict[str, Any]
    fields: dict[str, str | int | None] = field(default_factory=dict)
    key: str | None = None


@dataclass(frozen=True)
class ReportOutcome:
    """What a batch did: ``ended`` (nothing appended: the job had ended), else the ID of
    each event in order (``None`` for a duplicate key). ``cancel_requested`` as it was."""

    ended: bool
    cancel_requested: bool
    ids: list[str | None]

    @property
    def appended(self) -> list[str]:
        return [entry_id for entry_id in self.ids if entry_id is not None]


class Reports:
    def __init__(self, store: JobStore, *, keys_kept: int = 10_000) -> None:
        self.store = store
        self.keys_kept = keys_kept

    async def append(self, job_id: str, reports: Sequence[Report], *, keys_ttl: int) -> ReportOutcome | None:
        """Append ``reports`` in order; ``None`` when there is no such job. ``keys_ttl``: how
        long the job's key set lives while the job runs (renewed by every batch)."""
        ts = now_iso()
        events = [
            NewEvent(report.type, {"jobId": job_id, **report.data, "ts": ts}, report.fields, report.key)
            for report in reports
        ]
        done = await self.store.append_batch(
            job_id, events, keys_ttl=max(1, keys_ttl), keys_kept=self.keys_kept
        )
        if done.status == "missing":
            return None
        if done.status == "ended":
            return ReportOutcome(ended=True, cancel_requested=done.cancel_requested, ids=[])
        return ReportOutcome(ended=False, cancel_requested=done.cancel_requested, ids=done.ids)
