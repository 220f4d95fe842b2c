"""Fixtures of the attack tests: making a pid come back, as wrapping pids would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import User

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
#: Attempts at forking a task at a given pid: another process on the machine may fork between
#: our write of ns_last_pid and our fork.
FORK_ATTEMPTS = 50


@pytest.fixture
def task_at_pid() -> Iterator:
    """``spawn(pid, user)``: a task of ``user`` (``sleep``) forked at exactly ``pid``."""
    started: list[subprocess.Popen] = []

    def spawn(pid: int, user: User) -> subprocess.Popen:
        for _ in range(FORK_ATTEMPTS):
            NS_LAST_PID.write_text(str(pid - 1))
            task = subprocess.Popen(
                ["sleep", "60"], user=user.uid, group=user.gid, extra_groups=[], cwd="/"
            )
            started.append(task)
            if task.pid == pid:
                return task
            task.kill()
            task.wait()
        raise AssertionError(f"could not fork at pid {pid} in {FORK_ATTEMPTS} attempts")

    yield spawn
    for task in started:
        if task.poll() is None:
            task.kill()
        task.wait()
