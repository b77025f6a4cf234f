"""The ``jobprogress`` command run as a user runs it, with a configuration folder of its own
(its kept token) and the URL of a stack."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

__all__ = ["CLI", "run_cli", "start_cli"]

#: The console script beside this interpreter.
CLI = Path(sys.executable).with_name("jobprogress")


async def start_cli(*args: str, config: Path, url: str) -> asyncio.subprocess.Process:
    """``jobprogress ARGS`` started, its output piped, its token kept under ``config``."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "JOBPROGRESS_URL": url}
    env.pop("JOBPROGRESS_TOKEN", None)
    return await asyncio.create_subprocess_exec(
        str(CLI), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def run_cli(*args: str, config: Path, url: str, timeout: float = 60) -> tuple[int, str, str]:
    """``jobprogress ARGS`` to its end: its exit code, stdout and stderr (killed after ``timeout``)."""
    process = await start_cli(*args, config=config, url=url)
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
