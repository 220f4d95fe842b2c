"""A private, throwaway PostgreSQL server: for tests, benchmarks and multi-server demos.

Started from the installed Debian binaries (Debian 12 ships PostgreSQL 15, Debian 13 ships 17:
the newest found is used), listening on 127.0.0.1 and a private socket directory only,
trusting local connections. initdb refuses to run as root, so the server runs as
``postgres`` via runuser (root only). Durability is off (fsync, synchronous_commit): a crash
only loses a throwaway cluster. Stopped by its pid file's postmaster, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from drc.embedded.polling import free_port
from drc.embedded.processes import stop_daemon

POSTGRESQL_LIB = Path("/usr/lib/postgresql")


def postgresql_bindir() -> Path:
    """The newest installed server's ``bin`` directory."""
    found = [
        p.parent for p in POSTGRESQL_LIB.glob("*/bin/pg_ctl") if p.parent.parent.name.isdigit()
    ]
    if not found:
        raise RuntimeError(
            f"no PostgreSQL server under {POSTGRESQL_LIB}: apt-get install postgresql"
        )
    return max(found, key=lambda bindir: int(bindir.parent.name))


def _as_postgres(*argv: object) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, argv)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stop(bindir: Path, data: Path) -> None:
    """pg_ctl stop; if that fails, kill the postmaster named in its pid file -- postgres can
    write that file, so only while that pid is postgres's postmaster of ``data``."""
    try:
        _as_postgres(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    except (subprocess.SubprocessError, OSError):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((data / "postmaster.pid").read_text().split()[0])
            stop_daemon(pid, str(data), uid=pwd.getpwnam("postgres").pw_uid)


@contextlib.contextmanager
def private_postgresql() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT`` of a private server (no database part)."""
    if os.geteuid() != 0:
        raise RuntimeError("a private PostgreSQL needs root (it runs as postgres via runuser)")
    bindir = postgresql_bindir()
    base = Path(tempfile.mkdtemp(prefix="drc-pg-"))  # under /tmp: postgres must reach it
    data = base / "data"
    port = free_port()
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


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new empty database on ``server``, dropped (connections and all) afterwards."""
    import psycopg

    name = f"drc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
