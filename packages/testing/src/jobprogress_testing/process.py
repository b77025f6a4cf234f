"""A child process in its own session, its output in a log file, that can be made to
die with its parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import StackError

__all__ = ["PR_SET_PDEATHSIG", "Process", "die_with_parent"]

#: ``prctl`` option: the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies, however it
    dies (even by SIGKILL); ``None`` where the system has no ``prctl``.

    Only for a process whose children are started by its main thread, and which runs no
    other thread: the signal follows the death of the thread that started the child.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Process:
    """A child process in its own session, its output in a log file."""

    #: Let output go to our own stdout/stderr instead of the log file (``scripts/run``).
    inherit_output = False
    #: Children get SIGTERM when this process dies (``scripts/run``; see :func:`die_with_parent`).
    die_with_parent = False

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        preexec = die_with_parent() if self.die_with_parent else None
        if self.inherit_output:
            self.popen = subprocess.Popen(self.argv, env=self.env, start_new_session=True, preexec_fn=preexec)
            return
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise StackError(f"{self.name} exited while starting:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.05)
        raise StackError(f"{self.name} not {what} after {timeout:g}s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.popen is None:
            return None
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close_log()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL, and wait for the exit."""
        if self.running:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()
        self._close_log()

    def _close_log(self) -> None:
        """Ours only: the process keeps its own copy; a start again opens it anew."""
        if self._log is not None:
            self._log.close()
            self._log = None
