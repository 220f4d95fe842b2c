"""Fixtures for the DRC link tests: a private munged, servers and clients on loopback, and
running code as ``nobody``.

The munged is real (its replay cache is what refuses replayed frames) and private: its own key
and socket in a fresh 0755 directory under /tmp (munged clients must traverse every parent,
which pytest's 0700 tmp_path forbids). It is stopped by pid in teardown even when tests fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drc.embedded.munged import PrivateMunged, start_private_munged, stop_private_munged
from drc.embedded.polling import free_port
from drc.embedded.runtime import install_runtime
from drc.link import LinkClient, LinkServer, Munge

RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
NOBODY_UID = 65534


@pytest.fixture(scope="session")
def munged() -> Iterator[PrivateMunged]:
    workdir = Path(tempfile.mkdtemp(prefix="drc-munged-", dir="/tmp"))
    try:
        daemon = start_private_munged(workdir)
    except RuntimeError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.skip(f"no private munged: {e}")
    try:
        yield daemon
    finally:
        stop_private_munged(daemon)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def public_dir() -> Iterator[Path]:
    """A 0755 dir under /tmp holding a copy of ``drc`` (and what it imports) for ``nobody``."""
    workdir = Path(tempfile.mkdtemp(prefix="drc-public-", dir="/tmp"))
    try:
        yield install_runtime(workdir).lib
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


class Loopback:
    """Link servers and clients on 127.0.0.1, named ``a``, ``b`` …: each name a fixed free
    port (a server closed and started again listens where its clients look), every frame
    sealed by the private munged."""

    def __init__(self, munged: PrivateMunged) -> None:
        self.munge = Munge(munged.socket)
        self.ports: dict[str, int] = {}

    def address(self, name: str = "a") -> tuple[str, int]:
        if name not in self.ports:
            self.ports[name] = free_port()
        return "127.0.0.1", self.ports[name]

    def server(self, handler: Any, name: str = "a", **kw: Any) -> LinkServer:
        host, port = self.address(name)
        return LinkServer(handler, host=host, port=port, munge=self.munge, **kw)

    def client(self, name: str = "a", **kw: Any) -> LinkClient:
        kw.setdefault("server_uid", 0)
        return LinkClient(*self.address(name), munge=self.munge, **kw)


@pytest.fixture
def loopback(munged: PrivateMunged) -> Loopback:
    return Loopback(munged)
