"""The hand-written SQL of the store, and its compiler: one style for every statement it runs.

The statements every verb runs are written here, in :data:`HOT_SQL`, and compiled once per
database by :class:`Statements`: on a slow core Peewee spends longer building a query's text
than SQLite spends running it. Their column lists come from the models (:data:`DECLARED`), so
no column order is kept by hand; tests check every name against the models and compile each
statement against a freshly migrated database. The rarer, set-based operations are Peewee
queries in the row modules; no third style.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from peewee import Database, QueryEvent
from peewee import __exception_wrapper__ as _driver_errors
from peewee import logger as _peewee_log

from drc.core.model import UINT32_MAX
from drc.store.models import DECLARED

_log = logging.getLogger("drc.store")

CHUNK = 500  # ids per IN (...) list: far below every engine's bound-parameter limit

#: The credential table's columns in model order: what "insert_credential" takes and
#: "load_credentials" returns first.
CREDENTIAL_COLUMNS: tuple[str, ...] = tuple(
    f.column_name for f in DECLARED.credential._meta.sorted_fields
)
#: A reference's holder: the fields of its unique index, in the model's order (credential
#: first); what "add_reference", "drop_reference" and "has_reference" take.
HOLDER_KEY: tuple[str, ...] = next(
    names for names, unique in DECLARED.reference._meta.indexes if unique
)
HOLDER_COLUMNS = tuple(DECLARED.reference._meta.fields[name].column_name for name in HOLDER_KEY)
#: The PostgreSQL channel of the shared change feed ("notify_revoked", "notify_freed").
CHANGE_CHANNEL = "drc_changes"


def _columns(names: Iterable[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{name}"' for name in names)


def _marks(names: Sequence[str]) -> str:
    return ", ".join("?" * len(names))


_HOLDER_MATCH = " AND ".join(f'"{column}" = ?' for column in HOLDER_COLUMNS)

#: The statements the verbs run, by name: ``?`` is one parameter, ``{ids}`` an IN list
#: (whitespace is collapsed when compiled). Identifiers are quoted because ``grant`` is a
#: reserved word. No ``%`` anywhere: psycopg would read it as a placeholder. RETURNING needs
#: SQLite 3.35 (checked by :mod:`drc.store.database`); PostgreSQL has had it all along.
HOT_SQL: dict[str, str] = {
    # PostgreSQL's locks (see drc.store.sql): credentials held shared (no release, revoke or
    # free meanwhile: KEY SHARE, the mode a reference's foreign key takes anyway, conflicts
    # only with FOR UPDATE) or exclusive (no reference added meanwhile), in id order;
    # advisory locks (the limits, a limit's scope, the VNI pool) taken in the order given.
    "lock_credentials_shared": """
        SELECT "id" FROM "credential" WHERE "id" IN {ids} ORDER BY "id" FOR KEY SHARE""",
    "lock_credentials": """
        SELECT "id" FROM "credential" WHERE "id" IN {ids} ORDER BY "id" FOR UPDATE""",
    "lock_keys": """SELECT pg_advisory_xact_lock(k) FROM unnest(?::bigint[]) AS k""",
    "lock_keys_shared": """
        SELECT pg_advisory_xact_lock_shared(k) FROM unnest(?::bigint[]) AS k""",
    # A group commit's transaction never waits for a lock: one another DRCS holds fails its
    # verb at once, which then runs alone after the group (drc.server.group), so two groups
    # can never wait for each other. For this transaction only; 1 is one millisecond.
    "batch_lock_timeout": """SELECT set_config('lock_timeout', '1', true)""",
    # Before the COMMIT of a group that NOTIFYed: the commit takes PostgreSQL's one lock on
    # the notification queue, which another DRCS's NOTIFYing commit may hold for a moment.
    # Waited for as long as any lock (db_lock_timeout, this session's default), not 1 ms.
    "commit_lock_timeout": """
        SELECT set_config('lock_timeout', reset_val, true) FROM pg_settings
        WHERE name = 'lock_timeout'""",
    # Advance the uint32 counter and say whether the new id is still alive (only after a wrap).
    "next_credential_id": f"""
        UPDATE "counter"
        SET "value" = CASE WHEN "value" >= {UINT32_MAX} THEN 1 ELSE "value" + 1 END
        WHERE "name" = 'credential'
        RETURNING "value", EXISTS (SELECT 1 FROM "credential" WHERE "id" = "counter"."value")""",
    # PostgreSQL: ids from a sequence (migration 0008), which no transaction holds; the same
    # wrap-around as the counter's (CYCLE at 4294967295) and the same check after it.
    "next_credential_id_sequence": """
        SELECT v, EXISTS (SELECT 1 FROM "credential" WHERE "id" = v)
        FROM nextval('credential_id') AS v""",
    "insert_credential": f"""
        INSERT INTO "credential" ({_columns(CREDENTIAL_COLUMNS)})
        VALUES ({_marks(CREDENTIAL_COLUMNS)})""",
    # Credentials with their reference counts and grants: one row per grant (or one with NULL
    # grant columns); references are counted once per credential, not once per grant row.
    "load_credentials": f"""
        SELECT {_columns(CREDENTIAL_COLUMNS, "c.")},
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
        SELECT {_columns(CREDENTIAL_COLUMNS, "c.")},
               0, g."kind", g."target"
        FROM "credential" AS c
        LEFT JOIN "grant" AS g ON g."credential_id" = c."id"
        WHERE c."id" IN {{ids}}
        ORDER BY c."id"
    """,
    "set_state": """UPDATE "credential" SET "state" = ? WHERE "id" = ?""",
    "bump_epoch": """UPDATE "credential" SET "epoch" = "epoch" + 1 WHERE "id" = ?""",
    "delete_credentials": """DELETE FROM "credential" WHERE "id" IN {ids}""",
    # One indexed count per scope a limit needs, each computed only when asked for (CASE),
    # not a scan of every credential (10 ms at 20,000 live credentials, paid by every acquire
    # once a per-user default is in force; PostgreSQL has no fast COUNT of a whole table). A
    # user's count is what it owns and what its pins hold of others' (index 0007; a uid pins a
    # credential at most once).
    "usage": """
        SELECT CASE WHEN ? THEN (SELECT COUNT(*) FROM "credential") END,
               CASE WHEN ? THEN (SELECT COUNT(*) FROM "credential" WHERE "uid" = ?)
                   + (SELECT COUNT(*) FROM "reference" AS r
                      JOIN "credential" AS c ON c."id" = r."credential_id"
                      WHERE r."uid" = ? AND r."kind" = 'pin' AND c."uid" <> ?) END,
               CASE WHEN ? THEN (SELECT COUNT(*) FROM "credential" WHERE "gid" = ?) END,
               CASE WHEN ? THEN
                   (SELECT COUNT(*) FROM "credential" WHERE "wlm" = ? AND "wlm" <> 0) END
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
        INSERT INTO "reference" ({_columns(HOLDER_COLUMNS)}, "owner")
        VALUES ({_marks(HOLDER_COLUMNS)}, ?)
        ON CONFLICT ({_columns(HOLDER_COLUMNS)}) DO NOTHING""",
    "drop_reference": f"""DELETE FROM "reference" WHERE {_HOLDER_MATCH}""",
    "has_reference": f"""SELECT 1 FROM "reference" WHERE {_HOLDER_MATCH} LIMIT 1""",
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
    # PostgreSQL: the same, skipping slots another transaction is claiming (it would wait for
    # that one's commit, then find its slot gone and extend the pool instead).
    "claim_free_slot_skip_locked": """
        DELETE FROM "free_slot"
        WHERE "pool" = ? AND "slot" = (SELECT "slot" FROM "free_slot"
                                       WHERE "pool" = ? AND "slot" < ?
                                       ORDER BY "slot" LIMIT 1 FOR UPDATE SKIP LOCKED)
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
    # A node daemon's hello (NodeHello, NodeConnect): 10,000 of them when a cluster
    # reconnects, so compiled once like the verbs'.
    "node_boot_id": """SELECT "boot_id" FROM "node" WHERE "name" = ?""",
    "set_node_boot_id": """
        INSERT INTO "node" ("name", "boot_id", "seen") VALUES (?, ?, ?)
        ON CONFLICT ("name") DO UPDATE SET "boot_id" = excluded."boot_id",
            "seen" = excluded."seen"
    """,
    # A hello on PostgreSQL in one round trip: the boot id recorded before (the CTE reads
    # the snapshot the statement started from), the new one written, and with
    # "node_connected_following" the DRCS the node follows (written when it changed). A data-
    # modifying WITH runs whether or not the SELECT reads it. SQLite, local, runs the three
    # statements above and below instead.
    "node_connected": """
        WITH previous AS (SELECT "boot_id" FROM "node" WHERE "name" = ?),
        hello AS (
            INSERT INTO "node" ("name", "boot_id", "seen") VALUES (?, ?, ?)
            ON CONFLICT ("name") DO UPDATE SET "boot_id" = excluded."boot_id",
                "seen" = excluded."seen")
        SELECT "boot_id" FROM previous
    """,
    "node_connected_following": """
        WITH previous AS (SELECT "boot_id" FROM "node" WHERE "name" = ?),
        hello AS (
            INSERT INTO "node" ("name", "boot_id", "seen") VALUES (?, ?, ?)
            ON CONFLICT ("name") DO UPDATE SET "boot_id" = excluded."boot_id",
                "seen" = excluded."seen"),
        follow AS (
            INSERT INTO "node_follow" ("node", "server", "since") VALUES (?, ?, ?)
            ON CONFLICT ("node") DO UPDATE SET "server" = excluded."server",
                "since" = excluded."since"
                WHERE "node_follow"."server" <> excluded."server")
        SELECT "boot_id" FROM previous
    """,
    # Which DRCS a node follows: written only when that changed (RETURNING says whether).
    "set_node_server": """
        INSERT INTO "node_follow" ("node", "server", "since") VALUES (?, ?, ?)
        ON CONFLICT ("node") DO UPDATE SET "server" = excluded."server",
            "since" = excluded."since"
            WHERE "node_follow"."server" <> excluded."server"
        RETURNING 1""",
    # Nodes that moved here together (NodeMoved, gathered): one statement for all of them,
    # the nodes and servers as two arrays (each node once: a row is written at most once).
    "set_nodes_server": """
        INSERT INTO "node_follow" ("node", "server", "since")
        SELECT m.node, m.server, ? FROM unnest(?::text[], ?::text[]) AS m(node, server)
        ON CONFLICT ("node") DO UPDATE SET "server" = excluded."server",
            "since" = excluded."since"
            WHERE "node_follow"."server" <> excluded."server"
    """,
    # The epochs a moved or resynchronising node asks: id and epoch alone.
    "credential_epochs": """SELECT "id", "epoch" FROM "credential" WHERE "id" IN {ids}""",
    # The shared change feed on PostgreSQL: NOTIFY is transactional (sent at commit, dropped
    # on rollback), so every DRCS listening on CHANGE_CHANNEL hears each committed revoke
    # ("r <credential> <epoch>") and free ("f <credential>") exactly when it becomes true.
    "notify_revoked": f"""
        SELECT pg_notify('{CHANGE_CHANNEL}', 'r ' || "id" || ' ' || "epoch")
        FROM "credential" WHERE "id" = ?""",
    "notify_freed": f"""
        SELECT pg_notify('{CHANGE_CHANNEL}', 'f ' || x) FROM unnest(?::bigint[]) AS x""",
}

#: The statements only PostgreSQL runs: SQLite's BEGIN IMMEDIATE is its lock (one writer, so
#: no row locks, no sequence, no skipping), and a SQLite store has one DRCS, so no change
#: feed to tell.
POSTGRESQL_ONLY = frozenset(
    {
        "lock_credentials",
        "lock_credentials_shared",
        "lock_keys",
        "lock_keys_shared",
        "batch_lock_timeout",
        "commit_lock_timeout",
        "next_credential_id_sequence",
        "claim_free_slot_skip_locked",
        "notify_revoked",
        "notify_freed",
        "set_nodes_server",
        "node_connected",
        "node_connected_following",
    }
)


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
        return run(self.db, self.sql(name, in_size), params)

    def rows(self, name: str, params: Sequence[Any] = (), in_size: int = 0) -> list[tuple]:
        """All rows; always drain RETURNING statements so SQLite finishes them at once."""
        return self.execute(name, params, in_size).fetchall()


class Opening:
    """PostgreSQL: the statements that open a verb (its savepoint, its request's claim, its
    credentials' locks, values quoted in), sent in front of the verb's first statement as one
    simple query: one round trip where they cost two (a batched hello is one round trip).

    :func:`send_with_next` hands it to the connection; whatever statement runs next on it,
    through :func:`run` or Peewee, carries it. The verb reads the row counts of its own
    statements (the last ``own``: the claim's first) in the ``then`` checks, which run as
    soon as they are known, before the verb reads its first statement's rows: a claim that
    finds its request recorded raises there (:class:`drc.store.requests.Replayed`), and the
    verb's savepoint, sent with it, undoes whatever that first statement did."""

    __slots__ = ("_checks", "counts", "own", "sent", "statements")

    def __init__(self, statements: list[str], own: int) -> None:
        self.statements = statements
        self.own = own
        self.sent = False  # executed (perhaps failed part-way): the savepoint may exist
        self.counts: list[int] | None = None  # the own statements' row counts, once read
        self._checks: list[Callable[[list[int]], None]] = []

    def then(self, check: Callable[[list[int]], None]) -> None:
        """``check(counts)`` once the own statements' row counts are known (now if they are)."""
        if self.counts is None:
            self._checks.append(check)
        else:
            check(self.counts)

    def _read(self, counts: list[int]) -> None:
        self.counts = counts[len(counts) - self.own :]
        checks, self._checks = self._checks, []
        for check in checks:
            check(self.counts)


def send_with_next(db: Database, opening: Opening) -> None:
    """Let the next statement this thread runs on ``db`` carry ``opening``."""
    db._state.drc_opening = opening


def drop_opening(db: Database) -> Opening | None:
    """The opening still waiting for a statement to carry it (None: sent), no longer waiting:
    the verb ended without running one."""
    state = db._state
    opening = getattr(state, "drc_opening", None)
    state.drc_opening = None
    return opening


def flush_opening(db: Database) -> None:
    """Send the opening still waiting, if any, on its own (a verb that ran no statement still
    claims its request and holds its locks before its transaction commits)."""
    opening = drop_opening(db)
    if opening is not None:
        _carried(db, opening, None, (), lambda text: run(db, text))


#: The server-side type a prepared statement declares for each plain parameter type (a
#: bool is no int here: ``type(True) is bool``). A None declares none: the server takes the
#: parameter's type from where it is used (a column it is written to or compared with).
_SQL_TYPES = {
    int: "bigint",
    float: "double precision",
    str: "text",
    bool: "boolean",
    type(None): "unknown",
}
_prepare_names = itertools.count()


class _Prepared:
    """The statements :func:`run` prepared on one PostgreSQL connection (by text and parameter
    types), and those waiting to be prepared before its next transaction."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, tuple[str, ...]], str] = {}
        self.waiting: set[tuple[str, tuple[str, ...]]] = set()
        self.refused: set[tuple[str, tuple[str, ...]]] = set()


def _execute_prepared(db: Database, conn: Any, sql: str, params: Sequence[Any]) -> str | None:
    """PostgreSQL: ``EXECUTE`` of ``sql`` prepared on ``conn``, its values quoted in (a
    statement of a simple query, which an opening can go in front of); None when it is not
    prepared yet (then it is noted, and prepared before the connection's next transaction:
    :func:`prepare_waiting`) or its values are not all plain (ids, times, names)."""
    if not params or not getattr(db, "drc_prepares", False):
        return None
    quoted = _quick_literals(params)
    kinds = tuple(_SQL_TYPES.get(type(p), "") for p in params)
    if quoted is None or "" in kinds:
        return None
    prepared: _Prepared = _kept(db, conn, "drc_prepared", _Prepared)
    key = (sql, kinds)
    name = prepared.names.get(key)
    if name is None:
        if key not in prepared.refused:
            prepared.waiting.add(key)
        return None
    return f"EXECUTE {name}({', '.join(quoted)})"


def prepare_waiting(db: Database) -> None:
    """PostgreSQL, outside a transaction: prepare the statements :func:`run` noted, so each
    is planned once per connection. (Outside, because the driver's own prepared statements
    are off for drc's connections: it deallocates every prepared statement on a rollback.)
    One the server refuses (a parameter whose type it cannot take from ours) keeps running
    unprepared."""
    state = getattr(db, "_state", None)
    kept = getattr(state, "drc_prepared", None)
    if kept is None or kept[0] is not state.conn or not kept[1].waiting:
        return
    prepared: _Prepared = kept[1]
    waiting, prepared.waiting = prepared.waiting, set()
    for key in sorted(waiting):
        sql, kinds = key
        name = f"drc_{next(_prepare_names)}"
        pieces = sql.split("%s")
        body = pieces[0] + "".join(f"${i}{piece}" for i, piece in enumerate(pieces[1:], 1))
        try:
            run(db, f"PREPARE {name} ({', '.join(kinds)}) AS {body}".replace("%", "%%"))
        except Exception as err:  # never a verb's: the statement runs unprepared, as before
            prepared.refused.add(key)
            _log.warning("PostgreSQL did not prepare %.80s: %s", sql, err)
            continue
        prepared.names[key] = name


def _carried(
    db: Database,
    opening: Opening,
    sql: str | None,
    params: Sequence[Any],
    execute: Callable[[str], Any],
) -> Any:
    """Run ``opening``'s statements, then ``sql`` (``EXECUTE`` of it prepared, else its
    values quoted in), as one simple query (``execute(text)``); the cursor, on the last
    statement's result, after the opening's checks ran."""
    statements = list(opening.statements)
    if sql is not None:
        prepared = _execute_prepared(db, db.connection(), sql, params)
        statements.append(prepared or (literal(db, sql, params) if params else sql))
    opening.sent = True
    cursor = execute("; ".join(statements))
    counts = [cursor.rowcount]
    for _ in statements[1:]:
        cursor.nextset()
        counts.append(cursor.rowcount)
    opening._read(counts[: len(opening.statements)])
    return cursor


def carry_opening(
    db: Database, sql: str, params: Sequence[Any] | None, execute: Callable[[str], Any]
) -> Any:
    """``sql`` run with the opening waiting on this thread's connection, if one is (its
    cursor: ``execute(text)``'s), else None. The one place an opening is sent with a
    statement: :func:`run` and the PostgreSQL database's ``execute_sql`` (Peewee's queries,
    on a cursor of their own, which Peewee closes once it has read it) both ask here first."""
    state = getattr(db, "_state", None)
    opening = getattr(state, "drc_opening", None)
    if opening is None:
        return None
    state.drc_opening = None
    return _carried(db, opening, sql, params or (), execute)


def run(db: Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """``db.execute_sql(sql, params)``: its cursor, the driver's errors as Peewee's.

    On an open connection the driver is called here: Peewee's own path is ten Python calls
    around it (log check, hook timing, open check), which a verb of five statements pays
    five times; and one cursor is kept per connection (a psycopg cursor costs microseconds
    to make). So the cursor answered is valid until the next statement run here: every
    caller reads its rows or row count at once. A connection still to open goes through
    Peewee. A verb's :class:`Opening` waiting on the connection goes with it. Query hooks
    (tests counting statements) and Peewee's debug log see each statement as it was sent
    (:func:`_observed`), on this same path: what they count is what production runs."""
    try:
        conn = db._state.conn
    except AttributeError:  # not a Peewee database, only like one
        return db.execute_sql(sql, params)
    if getattr(db._state, "drc_opening", None) is not None:
        return carry_opening(db, sql, params, lambda text: run(db, text))
    if conn is None:
        return db.execute_sql(sql, params)
    cursor = _kept(db, conn, "drc_cursor", conn.cursor)
    prepared = _execute_prepared(db, conn, sql, params)
    sent, values = (sql, params or ()) if prepared is None else (prepared, ())
    if db.query_hooks or _peewee_log.isEnabledFor(logging.DEBUG):
        return _observed(db, cursor, sent, values)
    with _driver_errors:
        cursor.execute(sent, values)
    return cursor


def _observed(db: Database, cursor: Any, sql: str, params: Sequence[Any]) -> Any:
    """``cursor.execute(sql, params)``, reported as Peewee reports its own queries: a debug
    line on its logger, then a :class:`~peewee.QueryEvent` to each query hook (also when it
    failed)."""
    _peewee_log.debug((sql, params))
    start = time.perf_counter()

    def report(error: Exception | None) -> None:
        event = QueryEvent(sql, params, time.perf_counter() - start, error)
        for hook in db.query_hooks:
            hook(event)

    try:
        with _driver_errors:
            cursor.execute(sql, params)
    except Exception as exc:
        report(exc)
        raise
    report(None)
    return cursor


def control(db: Database, sql: str) -> None:
    """A transaction's BEGIN, COMMIT or ROLLBACK, run as Peewee's own begin() and commit()
    run them: on the connection's kept cursor (:func:`run`'s), never through the query hooks
    or the query log, which count statements."""
    conn = db.connection()  # opens it if closed, as Peewee's begin() does
    cursor = _kept(db, conn, "drc_cursor", conn.cursor)
    with _driver_errors:
        cursor.execute(sql)


def literal(db: Database, sql: str, params: Sequence[Any]) -> str:
    """PostgreSQL: ``sql`` (compiled, ``%s`` placeholders) with ``params`` quoted in by the
    driver, for a simple query of several statements in one round trip (which takes no
    parameters). Plain values (:func:`_quick_literals`: ids, the claim's request id, digest,
    verb and time) are written here; anything else is quoted by one client-side cursor kept
    per connection, not one made per statement (a verb opens with a claim and its locks)."""
    quoted = _quick_literals(params)
    if quoted is not None:
        return sql % quoted
    import psycopg  # PostgreSQL's driver: SQLite stores never get here

    conn = db.connection()
    quoting = _kept(db, conn, "drc_quoting", lambda: psycopg.ClientCursor(conn))
    return quoting.mogrify(sql, params).replace("%", "%%")  # only values hold a "%"


def _kept(db: Database, conn: Any, name: str, make: Callable[[], Any]) -> Any:
    """The cursor ``make()`` made for ``conn``, kept as ``name`` in this thread's connection
    state (Peewee's: each thread has its own connection); made again with a new connection."""
    state = db._state
    kept = getattr(state, name, None)  # (connection, its cursor)
    if kept is None or kept[0] is not conn:
        kept = (conn, make())
        setattr(state, name, kept)
    return kept[1]


def _quick_literals(params: Sequence[Any]) -> tuple[str, ...] | None:
    """The SQL literals of values whose text is plain (None if any is not): NULL, a boolean,
    ids, a finite float (``repr`` reads back as the same double), a printable ASCII string
    (a request id, a digest, a verb's name) as an escape string constant, whose meaning does
    not depend on ``standard_conforming_strings``: only its backslashes and quotes need
    escaping.

    A ``%`` is doubled, here and in the driver's literals: the statements are run with an
    empty parameter tuple, so the driver reads ``%`` as the start of a placeholder (the
    texts themselves hold none: see :meth:`Statements.sql`)."""
    out = []
    for p in params:
        kind = type(p)
        if p is None:
            out.append("NULL")
        elif kind is bool:
            out.append("TRUE" if p else "FALSE")
        elif kind is int and p >= 0:
            out.append(str(p))
        elif kind is float and math.isfinite(p):
            out.append(repr(p))
        elif kind is str and p.isascii() and p.isprintable():
            text = p.replace("\\", "\\\\").replace("'", "''").replace("%", "%%")
            out.append("E'" + text + "'")
        else:
            return None
    return tuple(out)


def padded(ids: Sequence[int]) -> list[int]:
    """``ids`` grown to the next power of two with its last id (see :class:`Statements`)."""
    size = 1 << (len(ids) - 1).bit_length()
    return [*ids, *[ids[-1]] * (size - len(ids))]


def chunks(values: Iterable, size: int = CHUNK) -> Iterator[list]:
    """``values`` in lists of at most ``size``: one IN list each."""
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]
