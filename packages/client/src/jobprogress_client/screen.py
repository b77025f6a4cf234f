"""What ``jobprogress watch`` draws: one bar a job on the last lines, the log lines above them.

On a terminal the bars are redrawn in place; not on one (a pipe, a file), each change of a
bar is a line of its own, so that a script or a test reads plain lines.
"""

from __future__ import annotations

import shutil
from typing import Any, TextIO

__all__ = ["BAR_WIDTH", "Screen", "bar_of", "duration"]

BAR_WIDTH = 30


def bar_of(job: dict[str, Any], *, steps: bool = False) -> str:
    """A job's bar: its percent, status, (with ``steps``) step of total steps, the step
    running now, the time left when the job estimates it, and its message."""
    progress = int(job.get("progress") or 0)
    filled = BAR_WIDTH * progress // 100
    bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress:3d}%  {job.get('status', '')}"
    if steps and job.get("totalSteps"):
        bar += f"  step {job.get('step') or 0}/{job['totalSteps']}"
    if job.get("currentStep"):
        bar += f"  > {job['currentStep']}"
    eta = job.get("etaSeconds")
    if isinstance(eta, int) and eta > 0 and job.get("status") == "PROCESSING":
        bar += f"  ~{duration(eta)} left"
    if job.get("message"):
        bar += f"  {job['message']}"
    return bar


def duration(seconds: int) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Screen:
    """The bars on the last lines (one a key, in the order first shown), redrawn in place on a
    terminal; the log lines above them. Not on a terminal, each change of a bar is a line.
    With ``fit``, bars are cut to the terminal's width: several bars are redrawn by going up
    as many lines, which a bar that wrapped would throw off."""

    def __init__(self, out: TextIO, *, fit: bool = False) -> None:
        self.out = out
        self.live = out.isatty()
        self.fit = fit
        self.bars: dict[str, str] = {}
        self.drawn = 0  # bar lines on the screen, the cursor at the end of the last

    def show(self, bar: str, key: str = "") -> None:
        if self.bars.get(key) != bar:
            self.bars[key] = bar
            self._bars(bar)

    def line(self, text: str) -> None:
        if self.live:
            self.out.write(self._erase())
        self.out.write(f"{text}\n")
        if self.live:
            self.out.write(self._drawing())
        self.out.flush()

    def _bars(self, changed: str) -> None:
        self.out.write(f"{self._erase()}{self._drawing()}" if self.live else f"{changed}\n")
        self.out.flush()

    def _erase(self) -> str:
        """Back to the start of the first bar line, and the bars erased."""
        if self.drawn <= 1:
            return "\r\x1b[K"
        return f"\r\x1b[{self.drawn - 1}A\x1b[J"

    def _drawing(self) -> str:
        bars = list(self.bars.values())
        if self.fit:
            width = shutil.get_terminal_size().columns - 1
            bars = [bar[:width] for bar in bars]
        self.drawn = len(bars)
        return "\n".join(bars)

    def done(self) -> None:
        if self.live:
            self.out.write("\n")
            self.out.flush()
