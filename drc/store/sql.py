"""The DRCS store on Peewee: SQLite (default, WAL) or PostgreSQL, chosen by URL.

One method per domain operation, each a few set-based statements. Write transactions are
exclusive: SQLite takes its write lock at BEGIN (``IMMEDIATE``) under an in-process lock;
PostgreSQL locks the credential counter row ``FOR UPDATE`` first, so several DRCS sharing a
database never over-allocate a limit or a cookie.

The statements every verb runs are hand-written SQL in :data:`HOT_SQL`, compiled once per
database by :class:`Statements`: on a slow core Peewee spends longer building a query's text
than SQLite spends running it. Their long column lists come from the models; tests check every
name in them against the models and compile each against a freshly migrated database.
Everything else is a Peewee query on the store's own models (:func:`create_models`).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from peewee import (
    JOIN,
    Database,
    InterfaceError,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
    _savepoint,
    fn,
)
from playhouse.db_url import connect as connect_url
from playhouse.migrations import Runner

from drc.core.model import (
    UINT32_MAX,
    Credential,
    Flags,
    Holder,
    HolderKind,
    Limit,
    LimitScope,
    Resources,
    State,
    Target,
    TargetKind,
    Usage,
)
from drc.core.ports import PendingCleanup, StoreUnavailable
from drc.store import requests
from drc.store.models import DECLARED, Models, create_models
from drc.store.vni import VniRows

MIGRATIONS = Path(__file__).parent / "migrations"
CHUNK = 500  # ids per IN (...) list: far below every engine's bound-parameter limit
SQLITE_MIN = (3, 35)  # RETURNING

#: The credential table's columns in model order (what ``_credential`` unpacks).
_CREDENTIAL_NAMES = [f.column_name for f in DECLARED.credential._meta.sorted_fields]
_CREDENTIAL_COLUMNS = ", ".join(f'"{name}"' for name in _CREDENTIAL_NAMES)
_C_CREDENTIAL_COLUMNS = ", ".join(f'c."{name}"' for name in _CREDENTIAL_NAMES)
#: A reference's unique key (the holder), in the column order of ``_holder_params``.
_HOLDER_COLUMNS = tuple(
    DECLARED.reference._meta.fields[name].column_name
    for name in ("credential", "kind", "node", "job", "pid", "start", "uid")
)
_HOLDER = " AND ".join(f'"{column}" = ?' for column in _HOLDER_COLUMNS)
_HOLDER_LIST = ", ".join(f'"{column}"' for column in _HOLDER_COLUMNS)

#: The statements the verbs run, by name: ``?`` is one parameter, ``{ids}`` an IN list
#: (whitespace is collapsed when compiled). Identifiers are quoted because ``grant`` is a
#: reserved word. No ``%`` anywhere: psycopg would read it as a placeholder. RETURNING needs
#: SQLite 3.35 (checked in :func:`open_database`); PostgreSQL has had it all along.
HOT_SQL: dict[str, str] = {
    # PostgreSQL: serializes write transactions across DRCS instances (see the module doc).
    "lock": """SELECT "value" FROM "counter" WHERE "name" = 'credential' FOR UPDATE""",
    # Advance the uint32 counter and say whether the new id is still alive (only after a wrap).
    "next_credential_id": f"""
        UPDATE "counter"
        SET "value" = CASE WHEN "value" >= {UINT32_MAX} THEN 1 ELSE "value" + 1 END
        WHERE "name" = 'credential'
        RETURNING "value", EXISTS (SELECT 1 FROM "credential" WHERE "id" = "counter"."value")""",
    "insert_credential": f"""
        INSERT INTO "credential" ({_CREDENTIAL_COLUMNS})
        VALUES ({", ".join("?" * len(_CREDENTIAL_NAMES))})""",
    # Credentials with their reference counts and grants: one row per grant (or one with NULL
    # grant columns); references are counted once per credential, not once per grant row.
    "load_credentials": f"""
        SELECT {_C_CREDENTIAL_COLUMNS},
               COALESCE(rc."n", 0), g."kind", g."target"
        FROM "credential" AS c
        LEFT JOIN (SELECT "credential_id", COUNT(*) AS "n" FROM "reference"
                   WHERE "credential_id" IN {{ids}} GROUP BY "credential_id") AS rc
               ON rc."credential_id" = c."id"
        LEFT JOIN "grant" AS g ON g."credential_id" = c."id"
        WHERE c."id" IN {{ids}}
        ORDER BY c."id"
    """,
    # The same without the reference count, for the access path: counting a credential's
    # references is an index scan as long as they are (566 us per miss at 10,000 references),
    # which made an access storm slow down as the credential gained nodes.
    "load_credentials_uncounted": f"""
        SELECT {_C_CREDENTIAL_COLUMNS},
               0, g."kind", g."target"
        FROM "credential" AS c
        LEFT JOIN "grant" AS g ON g."credential_id" = c."id"
        WHERE c."id" IN {{ids}}
        ORDER BY c."id"
    """,
    "set_state": """UPDATE "credential" SET "state" = ? WHERE "id" = ?""",
    "bump_epoch": """UPDATE "credential" SET "epoch" = "epoch" + 1 WHERE "id" = ?""",
    "delete_grants": """DELETE FROM "grant" WHERE "credential_id" IN {ids}""",
    "delete_references": """DELETE FROM "reference" WHERE "credential_id" IN {ids}""",
    "delete_credentials": """DELETE FROM "credential" WHERE "id" IN {ids}""",
    "usage": """
        SELECT COUNT(*),
               SUM(CASE WHEN "uid" = ? THEN 1 ELSE 0 END),
               SUM(CASE WHEN "gid" = ? THEN 1 ELSE 0 END),
               SUM(CASE WHEN "wlm" = ? AND "wlm" <> 0 THEN 1 ELSE 0 END)
        FROM "credential"
    """,
    "limits": 'SELECT "scope", "target", "value" FROM "credential_limit"',
    # Inserts nothing (rather than failing) when the grant exists or the credential does not.
    "add_grant": """
        INSERT INTO "grant" ("credential_id", "kind", "target")
        SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM "credential" WHERE "id" = ?)
        ON CONFLICT ("credential_id", "kind", "target") DO NOTHING""",
    "remove_grant": """
        DELETE FROM "grant" WHERE "credential_id" = ? AND "kind" = ? AND "target" = ?""",
    "add_reference": f"""
        INSERT INTO "reference" ({_HOLDER_LIST}, "owner")
        VALUES ({", ".join("?" * (len(_HOLDER_COLUMNS) + 1))})
        ON CONFLICT ({_HOLDER_LIST}) DO NOTHING""",
    "drop_reference": f"""DELETE FROM "reference" WHERE {_HOLDER}""",
    "has_reference": f"""SELECT 1 FROM "reference" WHERE {_HOLDER} LIMIT 1""",
    "tenants_on_node": """
        SELECT "kind", "job", "pid" FROM "reference"
        WHERE "credential_id" = ? AND "node" = ? AND "kind" <> 'pin'""",
    "reference_counts": """
        SELECT "credential_id", COUNT(*), SUM(CAST("owner" AS INTEGER)) FROM "reference"
        WHERE "credential_id" IN {ids} GROUP BY "credential_id"
    """,
    # Take the lowest returned slot below the capacity.
    "claim_free_slot": """
        DELETE FROM "free_slot"
        WHERE "pool" = ? AND "slot" = (SELECT MIN("slot") FROM "free_slot"
                                       WHERE "pool" = ? AND "slot" < ?)
        RETURNING "slot"
    """,
    # Extend the pool's high-water mark (creating it on first use) unless that reaches the
    # capacity; returns the slot taken, or no row when the pool is full.
    "extend_pool": """
        INSERT INTO "counter" ("name", "value") VALUES (?, 1)
        ON CONFLICT ("name") DO UPDATE SET "value" = "counter"."value" + 1
            WHERE "counter"."value" < ?
        RETURNING "value" - 1""",
    "return_slot": """INSERT INTO "free_slot" ("pool", "slot") VALUES (?, ?)""",
}


#: The shared change feed on PostgreSQL: NOTIFY is transactional (sent at commit, dropped on
#: rollback), so every DRCS listening on :data:`CHANGE_CHANNEL` hears each committed revoke
#: ("r <credential> <epoch>") and free ("f <credential>") exactly when it becomes true.
CHANGE_CHANNEL = "drc_changes"
CHANGE_SQL = {
    "revoked": f"""SELECT pg_notify('{CHANGE_CHANNEL}', 'r ' || "id" || ' ' || "epoch")
                   FROM "credential" WHERE "id" = ?""",
    "freed": f"""SELECT pg_notify('{CHANGE_CHANNEL}', 'f ' || x) FROM unnest(?::bigint[]) AS x""",
}


class Statements:
    """:data:`HOT_SQL` compiled for one database: its placeholder style, IN lists expanded.

    Compiling is done once per (statement, IN-list size) and the text is reused, so Python's
    sqlite3 statement cache (and psycopg's prepared statements) see the same text every time.
    IN lists are padded to a power of two by repeating their last id, which changes no result
    and keeps the variants of a statement to a handful.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._compiled: dict[tuple[str, int], str] = {}

    def sql(self, name: str, in_size: int = 0) -> str:
        key = (name, in_size)
        text = self._compiled.get(key)
        if text is None:
            template = HOT_SQL[name]
            assert "%" not in template, f"{name}: a literal % breaks the %s placeholder style"
            text = template.replace("{ids}", "(" + ", ".join(["?"] * in_size) + ")")
            text = " ".join(text.split()).replace("?", self.db.param)
            self._compiled[key] = text
        return text

    def execute(self, name: str, params: Sequence[Any] = (), in_size: int = 0) -> Any:
        """The cursor of one run of statement ``name`` (counted by Peewee's query log)."""
        return self.db.execute_sql(self.sql(name, in_size), params)

    def rows(self, name: str, params: Sequence[Any] = (), in_size: int = 0) -> list[tuple]:
        """All rows; always drain RETURNING statements so SQLite finishes them at once."""
        return self.execute(name, params, in_size).fetchall()


def _padded(ids: Sequence[int]) -> list[int]:
    """``ids`` grown to the next power of two with its last id (see :class:`Statements`)."""
    size = 1 << (len(ids) - 1).bit_length()
    return [*ids, *[ids[-1]] * (size - len(ids))]


@dataclass(frozen=True)
class StoreTimeouts:
    """Every wait of the database bounded, in seconds ([server] db_* keys of drc.conf).

    PostgreSQL enforces its part server-side (``statement_timeout`` also ends a COMMIT that
    waits for a synchronous standby: the server then warns that it committed locally) and the
    keepalives end a connection whose host went silent; SQLite waits ``busy`` for another
    process's write lock, then fails with "database is locked".
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
            return PostgresqlDatabase(
                "postgresql://" + url.split("://", 1)[1], **timeouts.postgresql()
            )
        return connect_url(url, **timeouts.postgresql())
    raise ValueError(f"database URL {url!r}: scheme must be sqlite or postgresql")


def claim_sqlite_store(url: str) -> int | None:
    """Make this process the only DRCS of a SQLite store; the lock's fd (keep it open).

    Several DRCS need one PostgreSQL: SQLite has no way to tell another server's process about
    a change (no shared change feed), so a second DRCS on the same file is refused here, with
    one line saying what to do. None for PostgreSQL and in-memory stores.
    """
    import fcntl
    import os

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


class PeeweeStore:
    def __init__(self, database: Database, label: str = "") -> None:
        self.db = database
        sqlite = isinstance(database, SqliteDatabase)
        self.label = label or (f"sqlite:///{database.database}" if sqlite else "the store")
        self._guard = threading.local()  # the commit guard of the thread's work, if any
        self.models = create_models(database)  # this store's own (see drc.store.models)
        self._write_lock = threading.Lock()
        self._batch_thread: int | None = None  # the thread inside batch(), if any
        self._savepoints = itertools.count()  # names of batch() verbs' savepoints
        self._statements = Statements(database)

    def _tx(self) -> PeeweeTransaction:
        """A transaction object on this store's statements and models (its caller opened the
        database transaction)."""
        return PeeweeTransaction(self.db, self._statements, self.models)

    @classmethod
    def from_url(cls, url: str, timeouts: StoreTimeouts | None = None) -> PeeweeStore:
        store = cls(open_database(url, timeouts), database_label(url))
        store.migrate()
        return store

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns their names. A migration may rewrite a
        large table: the per-statement timeouts of the verbs do not apply to it."""
        postgres = isinstance(self.db, PostgresqlDatabase)
        with self._write_lock:
            if postgres:
                self.db.execute_sql("SET statement_timeout = 0")
                self.db.execute_sql("SET lock_timeout = 0")
            try:
                return Runner(self.db, str(MIGRATIONS)).up()
            finally:
                if postgres:
                    self.db.execute_sql("RESET statement_timeout")
                    self.db.execute_sql("RESET lock_timeout")

    @contextmanager
    def guarded(self, guard: Callable[[], None]) -> Iterator[None]:
        """Run ``guard()`` before every commit this thread makes inside the block; when it
        raises, the transaction rolls back instead (a call already answered as failed must
        not commit later: see drc.server.group)."""
        self._guard.check = guard
        try:
            yield
        finally:
            self._guard.check = None

    def _before_commit(self) -> None:
        check = getattr(self._guard, "check", None)
        if check is not None:
            check()

    def schema_version(self) -> str:
        applied = Runner(self.db, str(MIGRATIONS)).applied()
        return max(applied) if applied else "none"

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """A database that does not answer becomes :class:`StoreUnavailable` (ECONNREFUSED;
        the transaction rolled back, or never committed): a lost or timed-out PostgreSQL
        connection (reopened by the next transaction), or SQLite locked by another process
        for longer than its busy timeout."""
        try:
            yield
        except (OperationalError, InterfaceError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(self.db, PostgresqlDatabase):
                kind = "PostgreSQL"
                with contextlib.suppress(Exception):
                    self.db.close()
            elif "locked" in first or "busy" in first:
                kind, first = "SQLite", f"{first} (another process holds its write lock)"
            else:
                raise
            message = f"the {kind} database ({self.label}) did not answer: {first}"
            raise StoreUnavailable(message) from None

    @contextmanager
    def transaction(self) -> Iterator[PeeweeTransaction]:
        """One write transaction; it also records the link request being served, if any
        (:mod:`drc.store.requests`), so a retried request is recognised, never rerun."""
        if self._batch_thread == threading.get_ident():
            # inside batch(): a savepoint, so a failing verb undoes only itself; named by a
            # counter, as peewee's atomic() names each by a fresh uuid4 (Database.savepoint()
            # takes no name), a measurable part of a small verb
            with _savepoint(self.db, f"v{next(self._savepoints)}"):
                tx = self._tx()
                with self._recording(tx):
                    yield tx
            return
        with self._reachable(), self._write_lock, self.db.atomic():
            tx = self._tx()
            tx.lock()
            with self._recording(tx):
                yield tx
            self._before_commit()

    @contextmanager
    def _recording(self, tx: PeeweeTransaction) -> Iterator[None]:
        """Claim the request being served (if any) before the change, note what it created."""
        record = requests.CURRENT.get()
        if record is not None:
            requests.CURRENT.set(None)  # the request's first write transaction records it
            requests.claim(self.db, record)
        yield
        if record is not None and tx.created:
            requests.created(self.db, record, tx.created)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: one write transaction around several verbs, so they share one
        commit (on SQLite one fsync, most of a small verb's cost) instead of one each.

        Every :meth:`transaction` the calling thread opens inside becomes a savepoint of
        this one. Nothing is durable before the batch commits: callers answer the verbs'
        requests only after this block exits without error.
        """
        with self._reachable(), self._write_lock, self.db.atomic():
            self._tx().lock()
            self._batch_thread = threading.get_ident()
            try:
                yield
            finally:
                self._batch_thread = None
            self._before_commit()

    @contextmanager
    def snapshot(self) -> Iterator[PeeweeTransaction]:
        if isinstance(self.db, SqliteDatabase):
            # A deferred transaction is a consistent WAL snapshot and takes no write lock.
            with self._reachable(), self.db.atomic("DEFERRED"):
                yield self._tx()
        else:
            with self._reachable(), self.db.atomic():
                yield self._tx()

    def describe(self) -> dict[str, object]:
        backend = "postgresql" if isinstance(self.db, PostgresqlDatabase) else "sqlite"
        return {"backend": backend, "database": self.db.database, "schema": self.schema_version()}

    def close(self) -> None:
        self.db.close()


def _chunks(values: Iterable, size: int = CHUNK) -> Iterator[list]:
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _holder_params(credential: int, holder: Holder) -> tuple:
    """Parameters of a reference's unique key, in the column order of ``_HOLDER``."""
    return (
        credential,
        holder.kind.value,
        holder.node,
        holder.job,
        holder.pid,
        holder.start,
        holder.uid,
    )


class PeeweeTransaction(VniRows):
    """The core's :class:`~drc.core.ports.Transaction`, valid inside one ``atomic()`` block.

    What every verb runs goes through :class:`Statements` (one statement per method where the
    engines allow it); the rarer, set-based operations are Peewee queries.
    """

    def __init__(self, db: Database, statements: Statements, models: Models) -> None:
        self.db = db
        self._sql = statements
        self.models = models
        self.created = 0  # the credential this transaction inserted (request records)
        self._notify = isinstance(db, PostgresqlDatabase)

    def lock(self) -> None:
        """Make this write transaction the only one, before it reads anything.

        SQLite: already so (BEGIN IMMEDIATE under the store's lock). PostgreSQL: the credential
        counter row, locked FOR UPDATE, is the one lock every write transaction of every DRCS
        takes first; so a credential read after it cannot change before commit, and no
        per-row ``SELECT ... FOR UPDATE`` is needed (nor offered: ``get_credential`` has none).
        """
        if isinstance(self.db, PostgresqlDatabase):
            self._sql.rows("lock")

    # -- credentials ---------------------------------------------------------------------

    def next_credential_id(self) -> int:
        """Monotonic uint32 ids; after wrapping, ids still alive are skipped.

        One statement moves the counter and says whether the new id is taken; the skipping
        loop only runs once the counter has wrapped past 4294967295.
        """
        ((candidate, taken),) = self._sql.rows("next_credential_id")
        if not taken:
            return candidate
        c, counter = self.models.credential, self.models.counter
        for _ in range(UINT32_MAX - 1):
            candidate = candidate % UINT32_MAX + 1
            if not c.select().where(c.id == candidate).exists():
                break
        counter.update(value=candidate).where(counter.name == "credential").execute()
        return candidate

    def insert_credential(self, c: Credential) -> None:
        self.created = c.id
        r = c.resources
        self._sql.execute(
            "insert_credential",
            (
                c.id,
                c.uid,
                c.gid,
                c.wlm,
                int(c.flags),
                c.state.value,
                r.provider,
                r.cookie1,
                r.cookie2,
                r.ptag,
                r.data,
                c.created,
                c.epoch,
            ),
        )

    def get_credential(self, credential: int, *, count_refs: bool = True) -> Credential | None:
        """One statement, no row lock of its own: inside :meth:`PeeweeStore.transaction` the
        whole transaction is exclusive already (see :meth:`lock`). ``count_refs=False`` skips
        counting references (``refs`` is 0), which costs time in proportion to them."""
        found = self._load([credential], count_refs=count_refs)
        return found[0] if found else None

    def list_credentials(self, ids: Iterable[int] | None = None) -> list[Credential]:
        """Credentials with their grants and reference counts.

        Given ids: one statement per :data:`CHUNK` of them. All of them: three plain queries
        and no IN lists (about 0.1 s for 10k credentials).
        """
        if ids is not None:
            return [c for chunk in _chunks(ids) for c in self._load(chunk)]
        c, g, r = self.models.credential, self.models.grant, self.models.reference
        query = c.select().order_by(c.id)
        grants = g.select(g.credential, g.kind, g.target)
        refs = r.select(r.credential, fn.COUNT(r.id)).group_by(r.credential)
        rows = list(query.tuples())
        if not rows:
            return []
        acl: dict[int, list[Target]] = {}
        for cred_id, kind, target in grants.tuples():
            acl.setdefault(cred_id, []).append(Target(TargetKind(kind), target))
        counts = dict(refs.tuples())
        return [self._credential(row, acl, counts) for row in rows]

    def _load(self, ids: list[int], *, count_refs: bool = True) -> list[Credential]:
        """Up to :data:`CHUNK` credentials, ordered by id, in one statement."""
        if not ids:
            return []
        padded = _padded(ids)
        rows: dict[int, tuple] = {}
        counts: dict[int, int] = {}
        acl: dict[int, list[Target]] = {}
        for *row, refs, kind, target in self._sql.rows(
            "load_credentials" if count_refs else "load_credentials_uncounted",
            [*padded, *padded] if count_refs else padded,
            in_size=len(padded),
        ):
            cid = row[0]
            rows[cid] = tuple(row)
            counts[cid] = refs
            if kind is not None:
                acl.setdefault(cid, []).append(Target(TargetKind(kind), target))
        return [self._credential(row, acl, counts) for row in rows.values()]

    @staticmethod
    def _credential(row: tuple, acl: dict, counts: dict) -> Credential:
        (cid, uid, gid, wlm, flags, state, provider, c1, c2, ptag, data, created, epoch) = row
        return Credential(
            id=cid,
            uid=uid,
            gid=gid,
            wlm=wlm,
            flags=Flags(flags),
            state=State(state),
            resources=Resources(provider, c1, c2, ptag, data),
            created=created,
            epoch=epoch,
            refs=counts.get(cid, 0),
            grants=tuple(sorted(acl.get(cid, ()))),
        )

    def set_state(self, credential: int, state: State) -> None:
        self._sql.execute("set_state", (state.value, credential))

    def bump_epoch(self, credential: int) -> None:
        self._sql.execute("bump_epoch", (credential,))
        if self._notify:  # delivered to every DRCS at commit, never if it rolls back
            self.db.execute_sql(CHANGE_SQL["revoked"].replace("?", self.db.param), (credential,))

    def delete_credentials(self, ids: Iterable[int]) -> None:
        for chunk in _chunks(ids):
            padded = _padded(chunk)
            for name in ("delete_grants", "delete_references", "delete_credentials"):
                self._sql.execute(name, padded, in_size=len(padded))
            if self._notify:
                self.db.execute_sql(CHANGE_SQL["freed"].replace("?", self.db.param), (chunk,))

    def usage(self, uid: int, gid: int, job: int) -> Usage:
        ((total, by_uid, by_gid, by_job),) = self._sql.rows("usage", (uid, gid, job))
        return Usage(total or 0, int(by_uid or 0), int(by_gid or 0), int(by_job or 0))

    # -- access control list -------------------------------------------------------------

    def add_grant(self, credential: int, target: Target) -> bool:
        """One statement. An existing grant or a missing credential inserts nothing instead of
        raising a constraint error, so no savepoint is needed to keep the transaction usable."""
        cursor = self._sql.execute(
            "add_grant", (credential, target.kind.value, target.id, credential)
        )
        return cursor.rowcount > 0

    def remove_grant(self, credential: int, target: Target) -> bool:
        cursor = self._sql.execute("remove_grant", (credential, target.kind.value, target.id))
        return cursor.rowcount > 0

    # -- references ----------------------------------------------------------------------

    def add_reference(self, credential: int, holder: Holder, owner: bool) -> bool:
        """One INSERT; the unique holder index turns a second one into a no-op (rowcount 0)."""
        cursor = self._sql.execute(
            "add_reference", (*_holder_params(credential, holder), bool(owner))
        )
        return cursor.rowcount > 0

    def drop_reference(self, credential: int, holder: Holder) -> bool:
        cursor = self._sql.execute("drop_reference", _holder_params(credential, holder))
        return cursor.rowcount > 0

    def has_reference(self, credential: int, holder: Holder) -> bool:
        return bool(self._sql.rows("has_reference", _holder_params(credential, holder)))

    def tenants_on_node(self, credential: int, node: str) -> set[tuple[str, int]]:
        return {
            ("job", job) if kind == HolderKind.JOB.value else ("process", pid)
            for kind, job, pid in self._sql.rows("tenants_on_node", (credential, node))
        }

    def reference_counts(self, ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        ids = list(ids)
        counts = dict.fromkeys(ids, (0, 0))
        for chunk in _chunks(ids):
            padded = _padded(chunk)
            for cred_id, refs, owners in self._sql.rows(
                "reference_counts", padded, in_size=len(padded)
            ):
                counts[cred_id] = (refs, int(owners or 0))
        return counts

    def _drop_where(self, condition) -> set[int]:
        r = self.models.reference
        touched = {cid for (cid,) in r.select(r.credential).where(condition).distinct().tuples()}
        if touched:
            r.delete().where(condition).execute()
        return touched

    def drop_job_references(self, jobs: Iterable[int]) -> set[int]:
        r = self.models.reference
        touched: set[int] = set()
        for chunk in _chunks(sorted(set(jobs))):
            touched |= self._drop_where((r.kind == HolderKind.JOB.value) & r.job.in_(chunk))
        return touched

    def drop_job_references_on_node(self, node: str, jobs: Iterable[int]) -> set[int]:
        r = self.models.reference
        touched: set[int] = set()
        for chunk in _chunks(sorted(set(jobs))):
            touched |= self._drop_where(
                (r.kind == HolderKind.JOB.value) & (r.node == node) & r.job.in_(chunk)
            )
        return touched

    def drop_node_references(self, node: str) -> set[int]:
        r = self.models.reference
        return self._drop_where((r.node == node) & (r.kind != HolderKind.PIN.value))

    def drop_process_references(self, node: str, processes: Iterable[tuple[int, int]]) -> set[int]:
        r = self.models.reference
        touched: set[int] = set()
        for pid, start in processes:
            touched |= self._drop_where(
                (r.kind == HolderKind.PROCESS.value)
                & (r.node == node)
                & (r.pid == pid)
                & (r.start == start)
            )
        return touched

    def process_holders(self, node: str) -> set[tuple[int, int]]:
        r = self.models.reference
        rows = (
            r.select(r.pid, r.start)
            .where((r.kind == HolderKind.PROCESS.value) & (r.node == node))
            .distinct()
            .tuples()
        )
        return set(rows)

    def holders(self, ids: Iterable[int]) -> dict[int, list[Holder]]:
        r = self.models.reference
        ids = list(ids)
        found: dict[int, list[Holder]] = {i: [] for i in ids}
        for chunk in _chunks(ids):
            rows = (
                r.select(r.credential, r.kind, r.node, r.job, r.pid, r.start, r.uid)
                .where(r.credential.in_(chunk))
                .tuples()
            )
            for cred, kind, node, job, pid, start, uid in rows:
                found[cred].append(Holder(HolderKind(kind), node, job, pid, start, uid))
        for held in found.values():
            held.sort()
        return found

    def outstanding_jobs(self) -> set[int]:

        r = self.models.reference
        jobs = r.select(r.job).where(r.kind == HolderKind.JOB.value).distinct().tuples()
        return {j for (j,) in jobs}

    def job_credential(self, job: int) -> int:
        r = self.models.reference
        query = r.select(fn.MIN(r.credential)).where(
            (r.kind == HolderKind.JOB.value) & (r.job == job)
        )
        return int(query.scalar() or 0)

    # -- limits --------------------------------------------------------------------------

    def limits(self) -> list[Limit]:
        return [Limit(LimitScope(s), t, v) for s, t, v in self._sql.rows("limits")]

    def set_limit(self, limit: Limit) -> None:
        lim = self.models.limit
        lim.insert(scope=limit.scope.value, target=limit.id, value=limit.value).on_conflict(
            conflict_target=[lim.scope, lim.target], update={lim.value: limit.value}
        ).execute()

    def clear_limit(self, scope: LimitScope, id: int) -> bool:
        lim = self.models.limit
        return bool(lim.delete().where((lim.scope == scope.value) & (lim.target == id)).execute())

    # -- pool slots ----------------------------------------------------------------------

    def claim_slot(self, pool: str, capacity: int) -> int | None:
        """Reuse the lowest returned slot, else extend the high-water mark (one statement each)."""
        free = self._sql.rows("claim_free_slot", (pool, pool, capacity))
        if free:
            return free[0][0]
        if capacity < 1:
            return None
        taken = self._sql.rows("extend_pool", (f"pool:{pool}", capacity))
        return taken[0][0] if taken else None

    def return_slot(self, pool: str, slot: int) -> None:
        self._sql.execute("return_slot", (pool, slot))

    def slots_in_use(self, pool: str) -> int:
        counter, free_slot = self.models.counter, self.models.free_slot
        high = counter.select(counter.value).where(counter.name == f"pool:{pool}").scalar()
        free = free_slot.select().where(free_slot.pool == pool).count()
        return (high or 0) - free

    # -- external cleanups ----------------------------------------------------------------

    def add_pending_cleanup(self, credential: int, resources: Resources, now: float) -> int:
        r = resources
        return self.models.pending_cleanup.insert(
            credential=credential,
            provider=r.provider,
            cookie1=r.cookie1,
            cookie2=r.cookie2,
            ptag=r.ptag,
            provider_data=r.data,
            created=now,
            next_try=now,
        ).execute()

    def pending_cleanups(
        self, credentials: Iterable[int] | None = None, due: float | None = None
    ) -> list[PendingCleanup]:
        p = self.models.pending_cleanup
        query = p.select().order_by(p.id)
        if credentials is not None:
            ids = sorted(set(credentials))
            if not ids:
                return []
            query = query.where(p.credential.in_(ids))
        if due is not None:
            query = query.where(p.next_try <= due)
        return [
            PendingCleanup(
                id=row.id,
                credential=row.credential,
                resources=Resources(
                    row.provider, row.cookie1, row.cookie2, row.ptag, row.provider_data
                ),
                created=row.created,
                attempts=row.attempts,
                next_try=row.next_try,
                last_error=row.last_error,
            )
            for row in query
        ]

    def cleanup_done(self, cleanup: int) -> None:
        p = self.models.pending_cleanup
        p.delete().where(p.id == cleanup).execute()

    def cleanup_failed(self, cleanup: int, error: str, next_try: float) -> None:
        p = self.models.pending_cleanup
        p.update(attempts=p.attempts + 1, last_error=error[:512], next_try=next_try).where(
            p.id == cleanup
        ).execute()

    # -- nodes ---------------------------------------------------------------------------

    def node_count(self) -> int:
        return self.models.node.select().count()

    def node_boot_id(self, node: str) -> str | None:
        n = self.models.node
        return n.select(n.boot_id).where(n.name == node).scalar()

    def set_node_server(self, node: str, server: str, now: float) -> bool:
        """Record that ``node`` follows DRCS ``server``; True when that changed."""
        p = self.db.param
        rows = self.db.execute_sql(
            f'SELECT "server" FROM "node_follow" WHERE "node" = {p}', (node,)
        ).fetchall()
        if rows and rows[0][0] == server:
            return False
        self.db.execute_sql(
            f'INSERT INTO "node_follow" ("node", "server", "since") VALUES ({p}, {p}, {p}) '
            'ON CONFLICT ("node") DO UPDATE SET "server" = excluded."server", '
            '"since" = excluded."since"',
            (node, server, now),
        )
        return True

    def node_servers(self) -> list[tuple[str, str, float]]:
        """(node, DRCS it follows, since when) for every node that said so."""
        rows = self.db.execute_sql(
            'SELECT "node", "server", "since" FROM "node_follow" ORDER BY "node"'
        ).fetchall()
        return [(n, s, float(t)) for n, s, t in rows]

    def set_node_boot_id(self, node: str, boot_id: str, now: float) -> None:
        n = self.models.node
        n.insert(name=node, boot_id=boot_id, seen=now).on_conflict(
            conflict_target=[n.name], update={n.boot_id: boot_id, n.seen: now}
        ).execute()


def consistency_problems(store: PeeweeStore, pools: Iterable[str] = ("pool",)) -> list[str]:
    """Invariants a crash must never break, for slot-based ``pools``; empty when sound."""
    problems: list[str] = []
    with store.snapshot() as tx:
        creds = tx.list_credentials()
        for c in creds:
            if c.refs == 0:
                problems.append(f"credential {c.id} is alive with no reference")
        r, c = store.models.reference, store.models.credential
        orphans = (
            r.select(r.credential)
            .join(c, JOIN.LEFT_OUTER, on=r.credential == c.id)
            .where(c.id.is_null())
            .count()
        )
        if orphans:
            problems.append(f"{orphans} reference(s) to credentials that do not exist")
        for pool in pools:
            live = [c for c in creds if c.resources.provider == pool]
            slots = [int(c.resources.data) for c in live]
            if len(set(slots)) != len(slots):
                problems.append(f"pool {pool}: a slot is held by two live credentials")
            cookies = [c.resources.cookie1 for c in live]
            if len(set(cookies)) != len(cookies):
                problems.append(f"pool {pool}: a cookie is held by two live credentials")
            free = {
                s
                for (s,) in store.models.free_slot.select(store.models.free_slot.slot)
                .where(store.models.free_slot.pool == pool)
                .tuples()
            }
            if free & set(slots):
                problems.append(
                    f"pool {pool}: slot(s) {sorted(free & set(slots))} are both free and in use"
                )
            if tx.slots_in_use(pool) != len(live):
                problems.append(
                    f"pool {pool}: {tx.slots_in_use(pool)} slots in use but "
                    f"{len(live)} live credentials"
                )
    return problems
