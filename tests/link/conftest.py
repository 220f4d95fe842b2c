"""Fixtures for the DRC link tests: a private munged, and running code as ``nobody``.

The munged is real (its replay cache is what refuses replayed frames) and private: its own key
and socket in a fresh 0755 directory under /tmp (munged clients must traverse every parent,
which pytest's 0700 tmp_path forbids). It is stopped by pid in teardown even when tests fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import drc

MUNGED = shutil.which("munged") or "/usr/sbin/munged"
MUNGEKEY = shutil.which("mungekey") or "/usr/sbin/mungekey"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
NOBODY_UID = 65534


@dataclass(frozen=True)
class MungeDaemon:
    socket: str
    pid: int
    log: Path


def _stop(pid: int) -> None:
    """SIGTERM, wait (bounded), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def munged() -> Iterator[MungeDaemon]:
    if not (os.path.exists(MUNGED) and os.path.exists(MUNGEKEY)):
        pytest.skip("munged not installed (apt-get install munge libmunge2)")
    workdir = Path(tempfile.mkdtemp(prefix="drc-munged-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    pid: int | None = None
    pidfile = workdir / "munged.pid"
    try:
        subprocess.run(
            [MUNGEKEY, "-c", "-k", str(workdir / "munge.key")], check=True, capture_output=True
        )
        subprocess.run(
            [
                MUNGED,
                "-S",
                str(workdir / "munge.socket"),
                f"--key-file={workdir / 'munge.key'}",
                f"--log-file={workdir / 'munged.log'}",
                f"--pid-file={pidfile}",
                f"--seed-file={workdir / 'munged.seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                pid = int(pidfile.read_text())
                break
            time.sleep(0.05)
        assert pid is not None, "munged wrote no pid file"
        yield MungeDaemon(str(workdir / "munge.socket"), pid, workdir / "munged.log")
    finally:
        if pid is None and pidfile.exists():
            with contextlib.suppress(ValueError):
                pid = int(pidfile.read_text())
        if pid is not None:
            _stop(pid)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def public_dir() -> Iterator[Path]:
    """A 0755 dir under /tmp holding a copy of the ``drc`` package, importable by ``nobody``."""
    workdir = Path(tempfile.mkdtemp(prefix="drc-public-", dir="/tmp"))
    try:
        os.chmod(workdir, 0o755)
        shutil.copytree(
            Path(drc.__file__).parent,
            workdir / "drc",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for root, dirs, files in os.walk(workdir):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Nobody:
    """Runs Python source as the unprivileged user ``nobody`` (uid 65534)."""

    uid = NOBODY_UID

    def __init__(self, public_dir: Path) -> None:
        self.public_dir = public_dir

    async def spawn(self, script: str, *args: str) -> asyncio.subprocess.Process:
        """Start ``script`` with the public ``drc`` copy importable; stdout/stderr piped."""
        fd, path = tempfile.mkstemp(suffix=".py", dir=self.public_dir)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        os.chmod(path, 0o644)
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(self.public_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        return await asyncio.create_subprocess_exec(
            RUNUSER,
            "-u",
            "nobody",
            "--",
            "/usr/bin/python3",
            path,
            *args,
            cwd=self.public_dir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, script: str, *args: str, timeout: float = 30) -> str:
        """Run ``script`` to completion; its stdout (a non-zero exit fails the test)."""
        proc = await self.spawn(script, *args)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode()
        return out.decode()


@pytest.fixture(scope="session")
def nobody(public_dir: Path) -> Nobody:
    if os.geteuid() != 0:
        pytest.skip("needs root to run code as nobody")
    return Nobody(public_dir)
