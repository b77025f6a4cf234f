"""What ``jobprogress watch`` writes on a terminal and elsewhere, to the byte; and the exit
code of several jobs."""

import io

import pytest

from jobprogress_client.protocol import EventType, JobStatus
from jobprogress_client.screen import Screen, bar_of, duration
from jobprogress_client.watching import Shown, apply, exit_code


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_bar_on_a_terminal_is_redrawn_on_its_line_below_the_log() -> None:
    out = Terminal()
    screen = Screen(out)
    screen.show("[a]")
    screen.show("[a]")  # unchanged: not drawn again
    screen.line("  log")
    screen.show("[b]")
    screen.done()
    assert out.getvalue() == "\r\x1b[K[a]\r\x1b[K  log\n[a]\r\x1b[K[b]\n"


def test_several_bars_on_a_terminal_are_redrawn_together_cut_to_its_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "6")
    out = Terminal()
    screen = Screen(out, fit=True)
    screen.show("one", "1")
    screen.show("two-too-long", "2")
    screen.line("log")
    screen.show("ONE", "1")
    assert out.getvalue() == (
        "\r\x1b[Kone"  # the first bar
        "\r\x1b[Kone\ntwo-t"  # both, the second cut to 5 (the last column left free)
        "\r\x1b[1A\x1b[Jlog\none\ntwo-t"  # up to the first bar, erased: the line, then the bars
        "\r\x1b[1A\x1b[JONE\ntwo-t"  # a change redraws them all, in the order first shown
    )


def test_elsewhere_each_change_of_a_bar_is_a_line() -> None:
    out = io.StringIO()
    screen = Screen(out, fit=True)
    screen.show("one-is-long", "1")
    screen.show("two", "2")
    screen.show("two", "2")
    screen.line("log")
    screen.show("ONE", "1")
    screen.done()
    assert out.getvalue() == "one-is-long\ntwo\nlog\nONE\n"


def test_a_bar_shows_the_step_when_asked() -> None:
    job = {"progress": 50, "status": "PROCESSING", "step": 2, "totalSteps": 4, "message": "half"}
    assert bar_of(job) == f"[{'#' * 15}{'.' * 15}]  50%  PROCESSING  half"
    assert bar_of(job, steps=True) == f"[{'#' * 15}{'.' * 15}]  50%  PROCESSING  step 2/4  half"


def test_the_bar_shows_the_step_running_and_the_time_left() -> None:
    out = io.StringIO()
    shown = Shown({"status": "PROCESSING", "progress": 0})
    events = [
        (EventType.STEP, {"stepId": "compile", "name": "Compile", "status": "running", "step": None}),
        (EventType.PROGRESS, {"status": "PROCESSING", "progress": 40, "message": "m", "etaSeconds": 125}),
        (EventType.METRIC, {"metrics": [{"key": "warnings", "value": 3}], "step": 7}),
        (EventType.ANNOTATION, {"level": "warning", "message": "3 skipped", "title": "Test"}),
        (EventType.ARTIFACT, {"name": "build.tgz", "url": "https://e.com/b.tgz", "kind": "file"}),
        (EventType.STEP, {"stepId": "compile", "name": "Compile", "status": "completed"}),
        (EventType.PROGRESS, {"status": "PROCESSING", "progress": 60, "message": "m"}),
    ]
    screen = Screen(out)
    for kind, data in events:
        assert apply(screen, shown, kind, data) is None
    bar = f"[{'#' * 12}{'.' * 18}]  40%  PROCESSING"
    assert out.getvalue().splitlines() == [
        f"[{'.' * 30}]   0%  PROCESSING  > Compile",
        f"{bar}  > Compile  ~2m05s left  m",
        "WARNING: Test: 3 skipped",
        "artifact build.tgz: https://e.com/b.tgz",
        f"{bar}  ~2m05s left  m",  # the step has ended; a metric changes no field of the job
        f"[{'#' * 18}{'.' * 12}]  60%  PROCESSING  m",  # no estimate now: none shown
    ]
    assert shown.job["status"] == "PROCESSING" and "step" not in shown.job
    assert [duration(s) for s in (42, 185, 7800)] == ["42s", "3m05s", "2h10m"]


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([], 0),
        ([JobStatus.COMPLETED, JobStatus.COMPLETED], 0),
        ([JobStatus.COMPLETED, JobStatus.CANCELLED], 3),
        ([JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.COMPLETED], 1),
        ([JobStatus.FAILED, JobStatus.PROCESSING], 4),
    ],
)
def test_several_jobs_exit_as_the_worst_final_status(statuses: list[JobStatus], code: int) -> None:
    assert exit_code(statuses) == code
