"""The throwaway PostgreSQL servers are signalled (stalled, resumed, killed) by the pid in
their pid file, which the postgres user writes: root must never signal a process that is not
the postgres user's because of what that file says."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from drc.embedded.postgres import _postmaster_pid, signal_server


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_pid_file_naming_another_users_process_is_never_signalled(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "30"])  # this test's user's, not postgres's
    try:
        (tmp_path / "postmaster.pid").write_text(f"{victim.pid}\n{tmp_path}\n")
        signal_server(tmp_path, signal.SIGSTOP)
        assert _state(victim.pid) != "T"  # not stopped
        for planted in ("0", "1", "-1", "x", ""):  # never signalled, so only asked
            (tmp_path / "postmaster.pid").write_text(f"{planted}\n")
            assert _postmaster_pid(tmp_path) is None
    finally:
        victim.kill()
        victim.wait()
