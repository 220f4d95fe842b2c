"""Background daemons of the embedded default: start detached, check, stop by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from drc.embedded.polling import WaitTimeout, wait_for


def spawn(log_path: Path, argv: list[str]) -> int:
    """Start ``argv`` in its own session (a Ctrl-C for the caller must not reach it)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    return proc.pid


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False  # our child, now reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not zombie(pid)


def zombie(pid: int) -> bool:
    """Exited, not yet reaped by its parent (e.g. init, for a daemon another process started)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait, SIGKILL: a daemon that ignores SIGTERM must still go."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: not alive(pid), timeout, what=f"pid {pid} to exit", interval=0.02)
            return
