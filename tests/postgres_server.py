"""A throwaway PostgreSQL server for the store and cluster tests, and a fresh database per test.

The fixtures are registered for every test directory by the root conftest.

The server is started once per session from the installed Debian binaries (Debian 12 ships
PostgreSQL 15, Debian 13 ships 17: the newest found is used), listens on 127.0.0.1 and a
private socket directory only, trusts local connections, and is stopped and removed at the
end whatever happened. initdb refuses to run as root, so the server runs as ``postgres`` via
runuser: without root the PostgreSQL tests are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRESQL_LIB = Path("/usr/lib/postgresql")


def postgresql_bindir() -> Path:
    """The newest installed server's ``bin`` directory; fails when none is installed."""
    found = [
        p.parent for p in POSTGRESQL_LIB.glob("*/bin/pg_ctl") if p.parent.parent.name.isdigit()
    ]
    if not found:
        pytest.fail(
            f"no PostgreSQL server under {POSTGRESQL_LIB}: apt-get install postgresql "
            "(it is listed in .ci/apt-packages.txt)"
        )
    return max(found, key=lambda bindir: int(bindir.parent.name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*argv: object) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, argv)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stop(bindir: Path, data: Path) -> None:
    """pg_ctl stop; if that fails, SIGKILL the postmaster named in its pid file."""
    try:
        _as_postgres(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    except (subprocess.SubprocessError, OSError):
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT`` of a private server (no database part).

    Durability is switched off (fsync, synchronous_commit): these tests check semantics and
    concurrency, and a crash only loses a throwaway cluster.
    """
    if os.geteuid() != 0:
        pytest.skip(
            "PostgreSQL tests need root: they run a throwaway server as the postgres user "
            "with runuser (initdb refuses to run as root)"
        )
    bindir = postgresql_bindir()
    base = Path(tempfile.mkdtemp(prefix="drc-pg-"))  # under /tmp: postgres must reach it
    data = base / "data"
    port = _free_port()
    may_run = False  # from the first pg_ctl start on, there may be a server to stop
    try:
        shutil.chown(base, "postgres")
        _as_postgres(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-k {base} -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off"
        may_run = True
        _as_postgres(
            bindir / "pg_ctl", "-D", data, "-o", options, "-l", base / "log", "-w", "start"
        )
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if may_run:
            _stop(bindir, data)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgresql_url(postgresql_server: str) -> Iterator[str]:
    """A new empty database on the session's server, dropped (connections and all) after."""
    import psycopg

    name = f"drc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgresql_server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgresql_server}/{name}"
    with psycopg.connect(f"{postgresql_server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
