"""Making a pid come back, as wrapping pids would (shared by the attack tests)."""

from __future__ import annotations

from pathlib import Path

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
#: Forks at a given pid tried before giving up: another process on the machine may fork
#: between our write of ns_last_pid and our fork.
FORK_ATTEMPTS = 50
#: How often a test sets its scenario up again when another process took the pid first.
SCENARIOS = 3


class PidTaken(Exception):
    """Another process on the machine holds the pid: set the scenario up again."""
