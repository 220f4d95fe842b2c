"""Opening the DRCS database by URL: SQLite or PostgreSQL, every wait bounded.

Also the SQLite store's lock file (one DRCS per SQLite file) and the label a URL is shown by.
Nothing here knows the schema: the store (:mod:`drc.store.sql`) migrates and queries.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from peewee import Database, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import parse as parse_url

from drc.store.statements import carry_opening

log = logging.getLogger("drc.store")

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_MIN = (3, 35)  # RETURNING


@dataclass(frozen=True)
class StoreTimeouts:
    """Every wait of the database bounded, in seconds ([server] db_* keys of drc.conf).

    PostgreSQL enforces its part server-side and the keepalives end a connection whose host
    went silent; SQLite waits ``busy`` for another process's write lock, then fails with
    "database is locked". No setting bounds a COMMIT waiting for a synchronous standby that is
    gone (PostgreSQL disables ``statement_timeout`` before it commits): DRCS's own deadline
    answers its callers then (see drc.server.group).
    """

    connect: float = 3.0
    statement: float = 1.5
    lock: float = 1.0
    idle_in_transaction: float = 10.0
    keepalives_idle: int = 5
    keepalives_interval: int = 2
    keepalives_count: int = 3
    busy: float = 1.0

    def postgresql(self) -> dict[str, Any]:
        """libpq connection parameters (psycopg passes them through)."""
        ms = {
            "statement_timeout": self.statement,
            "lock_timeout": self.lock,
            "idle_in_transaction_session_timeout": self.idle_in_transaction,
        }
        return {
            "connect_timeout": max(2, round(self.connect)),  # libpq: whole seconds, >= 2
            "options": " ".join(f"-c {k}={round(v * 1000)}" for k, v in ms.items()),
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": self.keepalives_count,
        }


def database_label(url: str) -> str:
    """The store URL as messages may show it: user, password and query taken out."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        return url
    hosts = ",".join(h.rsplit("@", 1)[-1] for h in parts.netloc.split(","))
    return urlunsplit((parts.scheme, hosts, parts.path, "", ""))


class _PostgreSQL(PostgresqlDatabase):
    """PostgreSQL, saying in the log what its warnings mean for drc.

    The store prepares its statements itself (:func:`drc.store.statements.prepare_waiting`),
    so an opening can go in front of a prepared one in one simple query; the driver's own
    preparing is off: on every rollback it deallocates all prepared statements, drc's too."""

    drc_prepares = True

    def _initialize_connection(self, conn: Any) -> None:
        super()._initialize_connection(conn)
        conn.add_notice_handler(_notice)
        conn.prepare_threshold = None

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        """Peewee's queries too carry a verb's opening waiting on the connection."""
        super_execute = super().execute_sql
        carried = carry_opening(self, sql, params, lambda text: super_execute(text, ()))
        return carried if carried is not None else super_execute(sql, params)


def _notice(diagnostic: Any) -> None:
    """A COMMIT whose wait for a synchronous standby was cancelled (pg_cancel_backend) stays
    committed on the primary only: the standby lacks it."""
    text = diagnostic.message_primary or ""
    if "synchronous replication" in text:
        log.error(
            "a change was committed on the PostgreSQL primary only: no synchronous standby "
            "confirmed it before its wait was cancelled (%s); a fail-over now would lose it. "
            "Check the standby (pg_stat_replication) and synchronous_standby_names",
            text,
        )


def open_database(url: str, timeouts: StoreTimeouts | None = None) -> Database:
    """``sqlite:////var/lib/drc/drcs.db`` or ``postgresql://user@host/db``."""
    timeouts = timeouts or StoreTimeouts()
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        if sqlite3.sqlite_version_info < SQLITE_MIN:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: the store needs "
                f"{'.'.join(map(str, SQLITE_MIN))} or newer (UPDATE ... RETURNING)"
            )
        path = url.removeprefix("sqlite:///") or ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(
            path,
            lock_type="IMMEDIATE",
            timeout=timeouts.busy,
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full",
                "foreign_keys": 1,
                "busy_timeout": round(timeouts.busy * 1000),
            },
        )
    if scheme in ("postgres", "postgresql"):
        parsed = urlparse(url)
        if "," in parsed.netloc or parsed.query:
            # A multi-host URL (streaming replication: "host1,host2/db?target_session_attrs=
            # read-write"): libpq itself picks the writable primary, on every reconnect.
            return _PostgreSQL("postgresql://" + url.split("://", 1)[1], **timeouts.postgresql())
        return _PostgreSQL(**parse_url(url), **timeouts.postgresql())
    raise ValueError(f"database URL {url!r}: scheme must be sqlite or postgresql")


def claim_sqlite_store(url: str) -> int | None:
    """Make this process the only DRCS of a SQLite store; the lock's fd (keep it open).

    Several DRCS need one PostgreSQL: SQLite has no way to tell another server's process about
    a change (no shared change feed), so a second DRCS on the same file is refused here, with
    one line saying what to do. None for PostgreSQL and in-memory stores.
    """
    if urlparse(url).scheme != "sqlite":
        return None
    path = url.removeprefix("sqlite:///")
    if not path or path == ":memory:":
        return None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.drcs-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RuntimeError(
            f"another DRCS (pid {holder}) already serves the SQLite store {path}; several "
            "DRCS must share a PostgreSQL store ([server] database = postgresql://...)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
