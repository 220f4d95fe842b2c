"""Facts about processes and this node, read from the kernel (never from the environment).

A bus caller is the process that opened its connection. The bus gives that process's pid, but
a pid is only a number: once the process exits, the number comes back as somebody else's
process while a child that inherited the socket goes on calling (the polkit pid-reuse class of
bug). :func:`connecting_process` binds the answer to the process that connected:

- **pidfd** (the bus's ``ProcessFD``: dbus-daemon >= 1.15.8 built with ``SO_PEERPIDFD``,
  dbus-broker >= 35): the pid is read from the pidfd, and the pidfd is checked alive after
  ``/proc/PID`` is opened, so the snapshot cannot be of a later holder of the number.
- **fallback** (older buses, Debian 12's dbus-daemon 1.14): the process at the pid must run as
  the connection's user (effective uid equal, real uid equal or root) and must have started no
  later than the daemon heard the bus announce the connection. A reused pid of another user is
  refused outright; one of the same user is refused when it started later than that (to one
  clock tick, 10 ms at USER_HZ 100), which a pid that had to wrap around always did, unless
  the connection is older than the daemon's own start (see SECURITY.md).

Every field of a :class:`ProcessSnapshot` is read through one open ``/proc/PID`` directory: a
directory handle stays bound to the process it was opened on (reads fail once it is reaped),
so uid, gid and start time always describe one process.
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drc.core.errors import eperm

if TYPE_CHECKING:
    from drc.export import PeerCredentials

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class PidFd:
    """A pidfd owned by its holder (the bus exporter, for one connection), closed once.

    After :meth:`close` the object answers "gone" instead of touching a descriptor number the
    process may have reused for something else.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def pid(self) -> int:
        """The pid in this process's namespace; 0 when the process is gone (or unseen)."""
        if self._fd < 0:
            return 0
        try:
            with open(f"/proc/self/fdinfo/{self._fd}") as info:
                for line in info:
                    if line.startswith("Pid:"):
                        return max(int(line.split()[1]), 0)  # -1: exited and reaped
        except (OSError, ValueError, IndexError):
            return 0
        return 0  # not a pidfd

    def alive(self) -> bool:
        """True while the process has not been reaped (its pid cannot be reused yet)."""
        if self._fd < 0:
            return False
        try:
            signal.pidfd_send_signal(self._fd, 0)
        except PermissionError:
            return True  # exists, merely not ours to signal
        except OSError:
            return False
        return True

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


@dataclass(frozen=True)
class ProcessSnapshot:
    """One process, every field read through the same ``/proc/PID`` handle."""

    pid: int
    start: int  # clock ticks since boot (stat field 22): with the pid, a unique process id
    ruid: int
    euid: int
    gid: int  # effective


def _read_at(dirfd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    with open(fd, encoding="utf-8", errors="replace") as f:
        return f.read()


def snapshot_process(pid: int) -> ProcessSnapshot:
    """uid, gid and start time of the live process ``pid``, as one snapshot.

    Raises ProcessLookupError when the process is gone (also when it goes between reads).
    """
    if pid <= 0:
        raise ProcessLookupError(pid)
    try:
        dirfd = os.open(PROC / str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    try:
        status = _read_at(dirfd, "status")
        stat = _read_at(dirfd, "stat")
    except OSError as e:
        if e.errno in (errno.ESRCH, errno.ENOENT):
            raise ProcessLookupError(pid) from None
        raise
    finally:
        os.close(dirfd)
    fields = {k: v.split() for k, _, v in (line.partition(":") for line in status.splitlines())}
    return ProcessSnapshot(
        pid=pid,
        start=_start_of(stat),
        ruid=int(fields["Uid"][0]),
        euid=int(fields["Uid"][1]),
        gid=int(fields["Gid"][1]),
    )


def connection_seen_at() -> float:
    """Now on the clock process start times count in (CLOCK_BOOTTIME, seconds)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def connecting_process(peer: PeerCredentials) -> ProcessSnapshot:
    """The process that opened ``peer``'s bus connection, or EPERM when it is not there.

    See the module docstring for the two ways (pidfd, fallback) and what each guarantees.
    """
    handle = peer.process
    if handle is not None:
        pid = handle.pid()
        try:
            snap = snapshot_process(pid)
        except ProcessLookupError:
            raise _gone(peer) from None
        if not handle.alive():  # reaped after the pid was read: the snapshot may be another's
            raise _gone(peer)
        return snap
    try:
        snap = snapshot_process(peer.pid)
    except ProcessLookupError:
        raise _gone(peer) from None
    if snap.euid != peer.uid or snap.ruid not in (peer.uid, 0):
        raise eperm(
            f"pid {peer.pid} now runs as uid {snap.ruid}/{snap.euid}, but the bus connection "
            f"{peer.sender} is uid {peer.uid}'s: the process that connected has exited and "
            "its pid was reused; refusing"
        )
    if peer.since is not None and snap.start > int(peer.since * CLOCK_TICKS):
        raise eperm(
            f"pid {peer.pid} started after bus connection {peer.sender} appeared: the process "
            "that connected has exited and its pid was reused; refusing"
        )
    return snap


def still_connecting_process(peer: PeerCredentials, snap: ProcessSnapshot) -> bool:
    """Whether ``snap`` still describes the process behind ``peer`` (nothing read by pid since
    the snapshot, e.g. its cgroup, can then belong to a later holder of the number)."""
    if peer.process is not None:
        return peer.process.alive()
    try:
        return process_start_time(snap.pid) == snap.start
    except (ProcessLookupError, OSError, ValueError, IndexError):
        return False


def _gone(peer: PeerCredentials) -> Exception:
    return eperm(
        f"the process that opened bus connection {peer.sender} (pid {peer.pid}) has exited: "
        "a connection is answered only while the process that made it lives"
    )


def _start_of(stat: str) -> int:
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_start_time(pid: int) -> int:
    """Start time in clock ticks since boot (stat field 22): with the pid, a unique process id.

    Raises ProcessLookupError when the process is gone.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    return _start_of(stat)


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
