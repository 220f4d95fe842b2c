"""Facts about processes and this node, read from the kernel (never from the environment)."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

PROC = Path("/proc")


def process_gid(pid: int, uid: int) -> int:
    """The effective gid of a live process; for a vanished one, the uid's primary group."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Gid:"):
                return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


def process_start_time(pid: int) -> int:
    """Start time in clock ticks since boot (stat field 22): with the pid, a unique process id.

    Raises ProcessLookupError when the process is gone.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_parent(pid: int) -> tuple[int, int]:
    """(parent pid, own start time) of a live process, from one read of its stat file.

    Raises ProcessLookupError when the process is gone.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19])


def boot_id(path: Path = PROC / "sys/kernel/random/boot_id") -> str:
    """This boot's id: it changes at every reboot, so a node daemon can tell DRCS it rebooted."""
    return Path(path).read_text().strip()


def node_name() -> str:
    """This node's short host name, as Slurm names nodes."""
    return socket.gethostname().split(".", 1)[0]


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def is_root() -> bool:
    return os.geteuid() == 0
