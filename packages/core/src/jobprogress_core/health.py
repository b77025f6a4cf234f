"""This instance's health as data: the checks ``/health`` runs (Redis first, then each
service's own), and a signal when an answer was "critical", so that whoever keeps Consul
informed can follow the instance back to passing the moment it gets there."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: A part of the instance that works or not (Redis answers, the job loop turns...).
Check = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Report:
    healthy: bool
    #: Each check's name, with ``ok`` or the word it fails with.
    checks: dict[str, str]

    @property
    def status(self) -> str:
        """Consul's word for it."""
        return "passing" if self.healthy else "critical"


class Health:
    def __init__(self) -> None:
        self._checks: dict[str, tuple[Check, str]] = {}
        #: Set by every evaluation that was not healthy; whoever follows it clears it.
        self.failed = asyncio.Event()

    def add(self, name: str, check: Check, *, fails_as: str = "failing") -> None:
        self._checks[name] = (check, fails_as)

    async def evaluate(self) -> Report:
        checks = {}
        for name, (check, fails_as) in self._checks.items():
            checks[name] = "ok" if await check() else fails_as
        report = Report(all(value == "ok" for value in checks.values()), checks)
        if not report.healthy:
            self.failed.set()
        return report
