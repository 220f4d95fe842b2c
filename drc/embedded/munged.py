"""A private munged (own key, own socket) for the embedded default and the tests.

MUNGE clients must traverse every parent of the socket, so ``state_dir`` is 0711 (others may
reach the socket by name, not list or change anything) and every parent must be traversable;
the key, seed and logs stay the owner's only (0600), as on a cluster.

It runs ``THREADS`` threads, not munged's default 2: every daemon of an embedded cluster (and
the cluster simulator's thousands of nodes) asks this one munged, and DRCS alone has a few
calls in flight at once (:class:`drc.link.munge.MungeWorkers`); a call finding every thread
busy waits in munged's queue.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from drc.embedded.polling import wait_for
from drc.embedded.private import open_private, private_dir
from drc.embedded.processes import UMASK, stop_daemon, terminate

#: munged's --num-threads (munged(8); its default is 2).
THREADS = 4


@dataclass
class PrivateMunged:
    socket: str
    pid: int
    key_file: str


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.path.exists(path):
        raise RuntimeError(f"{name} not found: install the 'munge' package")
    return path


def start_private_munged(
    state_dir: Path, timeout: float = 10.0, threads: int = THREADS
) -> PrivateMunged:
    state_dir = private_dir(state_dir, 0o711)
    key = state_dir / "munge.key"
    if not key.exists():
        subprocess.run([_tool("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    socket = state_dir / "munge.socket"
    log = os.fdopen(open_private(state_dir / "munged.out"), "ab")
    with log:
        proc = subprocess.Popen(
            [
                _tool("munged"),
                "--foreground",
                "-S",
                str(socket),
                f"--key-file={key}",
                f"--log-file={state_dir / 'munged.log'}",
                f"--pid-file={state_dir / 'munged.pid'}",
                f"--seed-file={state_dir / 'munged.seed'}",
                f"--num-threads={threads}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            umask=UMASK,
        )

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"munged exited with status {proc.returncode}")
        return socket.exists()

    try:
        wait_for(listening, timeout, what="munged's socket", interval=0.01)
    except RuntimeError as e:
        terminate(proc.pid)
        raise RuntimeError(f"munged did not start ({e}){_what_it_said(state_dir)}") from None
    return PrivateMunged(str(socket), proc.pid, str(key))


def _what_it_said(state_dir: Path, lines: int = 5) -> str:
    """The end of the log munged wrote last: its own log file, or what it printed before
    opening it (a bad key is refused before). Only a file that exists is named."""
    written = []
    for name in ("munged.log", "munged.out"):
        with contextlib.suppress(FileNotFoundError):
            path = state_dir / name
            if path.stat().st_size:
                written.append((path.stat().st_mtime_ns, path))
    if not written:
        return f"; it wrote nothing (no {state_dir}/munged.log, munged.out empty)"
    path = max(written)[1]
    tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"; {path} ends:\n  " + "\n  ".join(tail)


def stop_private_munged(munged: PrivateMunged) -> bool:
    """Stop the munged started on ``munged.socket``; False if that pid is now another process."""
    return stop_daemon(munged.pid, munged.socket)
