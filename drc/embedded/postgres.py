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
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def _postmaster_pid(data: Path) -> int | None:
    """The postmaster's pid from its pid file, or None when none runs there. The file is the
    postgres user's: root signals the pid only if it is a process of that user."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        owner = os.stat(f"/proc/{pid}").st_uid
        postgres = pwd.getpwnam("postgres").pw_uid
    except (OSError, IndexError, ValueError, KeyError):
        return None
    return pid if pid > 1 and owner == postgres else None


def _server_pids(data: Path) -> list[int]:
    """The postmaster of ``data`` and its children (each child is in a session of its own, so
    a process group would miss them)."""
    pid = _postmaster_pid(data)
    if pid is None:
        return []
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += map(int, task.read_text().split())
    return [pid, *children]


def signal_server(data: Path, sig: int) -> None:
    """Send ``sig`` to the whole server of ``data``: SIGSTOP stalls it (it neither dies nor
    answers, its sockets stay open), SIGCONT lets it go on."""
    for pid in _server_pids(data):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop(bindir: Path, data: Path) -> None:
    """pg_ctl stop; if that fails, kill the postmaster named in its pid file -- postgres can
    write that file, so only while that pid is postgres's postmaster of ``data``."""
    signal_server(data, signal.SIGCONT)  # a test may have stalled it
    try:
        _as_postgres(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    except (subprocess.SubprocessError, OSError):
        pid = _postmaster_pid(data)
        if pid is not None:
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


STANDBY_NAME = "standby1"


@dataclass
class ReplicatedPostgresql:
    """A primary and a synchronous hot standby (streaming replication), each on its own
    loopback address: the setup drcs(8) HIGH AVAILABILITY describes, for fail-over tests.

    Server 0 starts as the primary, server 1 as its standby. Both configs list the standby as
    synchronous (the standby's is a copy, as after ``pg_basebackup``), so a promoted standby
    blocks every commit until :meth:`promote` clears it: the documented step.
    """

    bindir: Path
    base: Path
    hosts: list[tuple[str, int]] = field(default_factory=list)  # (address, port) per server

    def data(self, k: int) -> Path:
        return self.base / f"data{k}"

    def server_url(self, k: int) -> str:
        """``postgresql://postgres@ADDRESS:PORT`` of server ``k`` alone (no database part)."""
        host, port = self.hosts[k]
        return f"postgresql://postgres@{host}:{port}"

    def url(self, database: str) -> str:
        """The multi-host URL of ``database``: libpq connects to whichever server is writable."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def pid(self, k: int) -> int:
        """Server ``k``'s postmaster (what SIGSTOP stalls)."""
        pid = _postmaster_pid(self.data(k))
        if pid is None:
            raise RuntimeError(f"PostgreSQL server {k} ({self.data(k)}) is not running")
        return pid

    def start(self, k: int) -> None:
        host, port = self.hosts[k]
        options = f"-k {self.base} -h {host} -p {port} -c fsync=off"
        _as_postgres(
            self.bindir / "pg_ctl", "-D", self.data(k), "-o", options,
            "-l", self.base / f"log{k}", "-w", "start",
        )  # fmt: skip

    def crash(self, k: int) -> None:
        """Stop server ``k`` as a crash would (``pg_ctl -m immediate``: no shutdown checkpoint)."""
        _as_postgres(self.bindir / "pg_ctl", "-D", self.data(k), "-m", "immediate", "-w", "stop")

    def _sql(self, k: int, *statements: str) -> None:
        import psycopg

        with psycopg.connect(f"{self.server_url(k)}/postgres", autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def clear_synchronous_standbys(self, k: int) -> None:
        """``synchronous_standby_names = ''`` on server ``k`` (a standby accepts it too)."""
        self._sql(k, "ALTER SYSTEM SET synchronous_standby_names = ''", "SELECT pg_reload_conf()")

    def promote(self, k: int, *, clear_synchronous: bool = True) -> None:
        """Make standby ``k`` the primary as drcs(8) says to: clear its synchronous standbys
        (none will stream from it; with the copied list left every COMMIT waits forever),
        then ``pg_promote()``, which returns once it is done. ``clear_synchronous=False``
        walks into that trap."""
        if clear_synchronous:
            self.clear_synchronous_standbys(k)
        self._sql(k, "SELECT pg_promote()")

    def stall(self, k: int) -> None:
        """SIGSTOP server ``k`` whole: alive, sockets open, answering nothing."""
        signal_server(self.data(k), signal.SIGSTOP)

    def resume(self, k: int) -> None:
        signal_server(self.data(k), signal.SIGCONT)

    def kill(self, k: int) -> None:
        """SIGKILL server ``k`` whole, stalled or not: fencing, so it never answers again."""
        signal_server(self.data(k), signal.SIGKILL)

    def sync_state(self, k: int = 0) -> list[tuple[str, str]]:
        """(application_name, sync_state) of each standby streaming from server ``k``."""
        import psycopg

        with psycopg.connect(f"{self.server_url(k)}/postgres", autocommit=True) as conn:
            return conn.execute(
                "SELECT application_name, sync_state FROM pg_stat_replication"
            ).fetchall()


@contextlib.contextmanager
def replicated_postgresql(
    addresses: tuple[str, str] = ("127.0.0.21", "127.0.0.22"),
) -> Iterator[ReplicatedPostgresql]:
    """A primary on ``addresses[0]`` and its synchronous standby on ``addresses[1]``; both
    stopped (by pid if need be) and removed afterwards, whatever happened."""
    if os.geteuid() != 0:
        raise RuntimeError("a private PostgreSQL needs root (it runs as postgres via runuser)")
    base = Path(tempfile.mkdtemp(prefix="drc-pgpair-"))
    pair = ReplicatedPostgresql(postgresql_bindir(), base)
    pair.hosts = [(host, free_port(host)) for host in addresses]
    started: list[int] = []
    try:
        shutil.chown(base, "postgres")
        _as_postgres(
            pair.bindir / "initdb", "-D", pair.data(0), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip
        with (pair.data(0) / "postgresql.conf").open("a") as conf:
            conf.write(
                "wal_level = replica\nmax_wal_senders = 5\n"
                f"synchronous_standby_names = '{STANDBY_NAME}'\nsynchronous_commit = on\n"
                # A promote request that finds the standby between two tries to reach the
                # lost primary waits out this interval (5 s by default, measured): drcs(8)
                "wal_retrieve_retry_interval = '500ms'\n"
            )
        with (pair.data(0) / "pg_hba.conf").open("a") as hba:
            hba.write(
                "host all all 127.0.0.0/8 trust\nhost replication postgres 127.0.0.0/8 trust\n"
            )
        started.append(0)
        pair.start(0)
        host, port = pair.hosts[0]
        _as_postgres(
            pair.bindir / "pg_basebackup", "-h", host, "-p", port, "-U", "postgres",
            "-D", pair.data(1), "-R", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        with (pair.data(1) / "postgresql.auto.conf").open("a") as auto:  # the last one counts
            auto.write(
                f"primary_conninfo = 'host={host} port={port} user=postgres "
                f"application_name={STANDBY_NAME}'\n"
            )
        started.append(1)
        pair.start(1)
        deadline = time.monotonic() + 30
        while (STANDBY_NAME, "sync") not in pair.sync_state(0):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not become synchronous; see {base}/log1")
            time.sleep(0.05)
        yield pair
    finally:
        for k in started:
            _stop(pair.bindir, pair.data(k))
        shutil.rmtree(base, ignore_errors=True)
