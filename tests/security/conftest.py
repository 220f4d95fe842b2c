"""Fixtures of the attack tests: making a pid come back, as wrapping pids would."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pidreuse import FORK_ATTEMPTS, NS_LAST_PID, PidTaken

from cluster import User


@pytest.fixture
def task_at_pid() -> Iterator:
    """``spawn(pid, user) -> pid``: a task of ``user`` (``sleep 60``) forked at exactly
    ``pid``; PidTaken when another process holds it. Every task is killed by pid at the end."""
    started: list[int] = []

    def spawn(pid: int, user: User) -> int:
        for _ in range(FORK_ATTEMPTS):
            if Path(f"/proc/{pid}").exists():
                raise PidTaken(pid)
            exec_done, exec_wait = os.pipe()  # both close-on-exec
            NS_LAST_PID.write_text(str(pid - 1))
            child = os.fork()  # at once: the narrower the window, the likelier we get pid
            if child == 0:
                try:
                    os.setgroups([])
                    os.setgid(user.gid)
                    os.setuid(user.uid)
                    os.execv("/bin/sleep", ["sleep", "60"])
                finally:
                    os._exit(127)
            os.close(exec_wait)
            os.read(exec_done, 1)  # end of file once the child runs sleep as ``user``
            os.close(exec_done)
            if child == pid:
                started.append(child)
                return child
            _stop(child)
        raise PidTaken(pid)

    yield spawn
    for child in started:
        _stop(child)


def _stop(child: int) -> None:
    """Kill and reap our own unreaped child (so the pid cannot name another process yet)."""
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
