"""Events reported for an external job (``POST /api/jobs/{id}/events``), appended as the
worker appends its own: each event's stream entry and its change of the job's hash in one
atomic step, so ``GET /api/jobs/{id}`` and the stream never disagree.

A batch is appended in order by one Lua script (``lua/append_events.lua``): all of it, or
nothing when the job has ended. An event may carry an idempotency key; a key appended
before for the same job is skipped, so a reporter may retry a batch whose answer it lost.
The keys are kept beside the job (same hash tag), the latest ``keys_kept`` of them, and
expire with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import dumps, now_iso
from .store import JobStore, load_script

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
        self._script = store.redis.register_script(load_script("append_events.lua"))

    async def append(self, job_id: str, reports: Sequence[Report], *, keys_ttl: int) -> ReportOutcome | None:
        """Append ``reports`` in order; ``None`` when there is no such job. ``keys_ttl``: how
        long the job's key set lives while the job runs (renewed by every batch)."""
        keys = self.store.keys
        ts = now_iso()
        args: list[str] = [
            str(self.store.stream_maxlen), str(self.store.retention_seconds), str(max(1, keys_ttl)),
            str(self.keys_kept), str(len(reports)),
        ]  # fmt: skip
        for report in reports:
            pairs = [part for name, value in report.fields.items() for part in (name, _text(value))]
            data = {"jobId": job_id, **report.data, "ts": ts}
            args += [report.type, dumps(data), report.key or "", str(len(pairs) // 2), *pairs]
        reply = await self._script(
            keys=[keys.job(job_id), keys.events(job_id), keys.report_keys(job_id)], args=args
        )
        outcome = [_decode(part) for part in reply]
        if outcome[0] == "missing":
            return None
        cancel = outcome[1] == "1"
        if outcome[0] == "ended":
            return ReportOutcome(ended=True, cancel_requested=cancel, ids=[])
        return ReportOutcome(ended=False, cancel_requested=cancel, ids=[part or None for part in outcome[2:]])


def _text(value: str | int | None) -> str:
    return "" if value is None else str(value)


def _decode(part: Any) -> str:
    return part.decode() if isinstance(part, bytes) else str(part)
