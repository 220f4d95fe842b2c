"""Background daemons of the embedded default: start detached, check, stop by pid.

A pid read back from the state file is only a number: the daemon may have died and the number
been reused, and a state file must never make root signal what drc did not start (a pid of 0
signals our own process group, -1 every process). So a pid is signalled only while it is
:func:`ours`: a live process of this user, leading its own session as every daemon started
here does, with the argument it was started with (its config or socket path, inside the state
directory) among the words of its command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import drc
from drc.embedded.polling import WaitTimeout, wait_for
from drc.embedded.private import open_private

#: Daemons create their files (database, WAL, sockets aside) for their owner only.
UMASK = 0o077


#: The directory this process imported drc from: a daemon started here imports it from there.
DRC_ROOT = os.path.realpath(Path(drc.__file__).parent.parent)


def python_daemon(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``module`` (``python -m``) as a daemon of this drc.

    ``-P``: the working directory is not put on the import path, as ``-m`` would put it first.
    It is the caller's, maybe a world-writable /tmp, where anyone may have left a ``drc/``
    package that a root daemon would import. The daemon imports the drc that starts it: from
    the interpreter's own path (an installed drc), else from :data:`DRC_ROOT` put first on
    ``PYTHONPATH`` (a source tree found in the working directory, an editable install)."""
    env = dict(os.environ)
    cwd = os.path.realpath(os.getcwd())
    own = {os.path.realpath(p) for p in sys.path if p} - {cwd}
    if DRC_ROOT not in own:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (DRC_ROOT, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-P", "-m", module, *args], env


def spawn(log_path: Path, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``argv`` (in ``env``, else this environment) in its own session (a Ctrl-C for the
    caller must not reach it), its output appended to ``log_path`` (0600, never through a
    symlink), with :data:`UMASK`."""
    log = open_private(log_path)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            umask=UMASK,
            env=env,
        )
    finally:
        os.close(log)
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


def ours(pid: int, argument: str, uid: int | None = None) -> bool:
    """Whether ``pid`` is (still) the daemon started here with ``argument`` on its command line,
    running as ``uid`` (default: this user) in a session of its own."""
    if pid <= 1 or not alive(pid):
        return False
    uid = os.geteuid() if uid is None else uid
    proc = Path(f"/proc/{pid}")
    try:
        status = (proc / "status").read_text()
        words = (proc / "cmdline").read_bytes().split(b"\0")
        session = (proc / "stat").read_text().rpartition(")")[2].split()[3]
    except (OSError, IndexError):
        return False
    uids = next((line.split()[1:3] for line in status.splitlines() if line.startswith("Uid:")), [])
    return uids == [str(uid)] * 2 and session == str(pid) and argument.encode() in words


def terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait, SIGKILL: a daemon that ignores SIGTERM must still go. For a pid this
    process knows (its child, an :class:`~drc.embedded.cluster.Embedded` it started); a pid
    read from a file goes through :func:`stop_daemon`. Never 0 or -1 (a group, everything)."""
    if pid <= 1:
        raise ValueError(f"refusing to signal pid {pid}")
    _kill(lambda sig: os.kill(pid, sig), pid, timeout)


def stop_daemon(pid: int, argument: str, timeout: float = 5.0, uid: int | None = None) -> bool:
    """Stop ``pid`` if it is :func:`ours` (as ``uid``): True once it is gone, False when it
    lives on but is not ours (nothing is signalled then). The signals go through a pidfd
    opened before the check, so they reach the process checked even if the number is reused
    meanwhile."""
    if pid <= 1:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if ours(pid, argument, uid):
            _kill(lambda sig: signal.pidfd_send_signal(pidfd, sig), pid, timeout)
    finally:
        os.close(pidfd)
    return not alive(pid)


def _kill(send: Callable[[int], None], pid: int, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            send(sig)
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: not alive(pid), timeout, what=f"pid {pid} to exit", interval=0.02)
            return
