"""The DRCS store on Peewee: SQLite (default, WAL) or PostgreSQL, chosen by URL.

:class:`PeeweeStore` is :mod:`drc.core.ports`'s store: it opens transactions and migrates.
:class:`PeeweeTransaction` is what a verb works on inside one; its operations live in one row
module per table group (:mod:`~drc.store.credentials`, :mod:`~drc.store.references`,
:mod:`~drc.store.limits`, :mod:`~drc.store.slots`, :mod:`~drc.store.cleanups`,
:mod:`~drc.store.nodes`, :mod:`~drc.store.vni`), over the hand-written statements of
:mod:`~drc.store.statements` (what every verb runs) or Peewee queries (the rest). Opening a
database by URL is :mod:`~drc.store.database`.

Write transactions are exclusive: SQLite takes its write lock at BEGIN (``IMMEDIATE``) under an
in-process lock; PostgreSQL locks the credential counter row ``FOR UPDATE`` first, so several
DRCS sharing a database never over-allocate a limit or a cookie.

The store has two modes, both explicit here:

- **the backend** (:attr:`PeeweeStore.postgresql`): PostgreSQL takes the counter row lock in
  every write transaction and announces revokes and frees on the shared change feed
  (``NOTIFY``); SQLite needs neither (one DRCS per file, ``BEGIN IMMEDIATE``).
- **the batch** (:meth:`PeeweeStore.batch`): a group commit's one transaction, yielded as a
  :class:`Batch` handle. A :meth:`PeeweeStore.transaction` handed that batch (in its
  :class:`~drc.core.ports.Unit`) is a savepoint of it; one opened without it while the batch
  is open on the same connection is refused (it could neither be a transaction of its own nor
  silently join the batch).

What a write transaction records besides its change is handed to it too: the unit's
:class:`~drc.core.ports.Request`, claimed once (:mod:`drc.store.requests`).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from peewee import (
    Database,
    InterfaceError,
    OperationalError,
    PostgresqlDatabase,
    _savepoint,
)
from playhouse.migrations import Runner

from drc.core.ports import StoreUnavailable, Unit
from drc.store import requests
from drc.store.cleanups import CleanupRows
from drc.store.credentials import CredentialRows
from drc.store.database import MIGRATIONS, StoreTimeouts, database_label, open_database
from drc.store.limits import LimitRows
from drc.store.models import Models, create_models
from drc.store.nodes import NodeRows
from drc.store.references import ReferenceRows
from drc.store.slots import SlotRows
from drc.store.statements import Statements
from drc.store.vni import VniRows


class PeeweeStore:
    """The core's :class:`~drc.core.ports.Store` on one database (see the module doc)."""

    def __init__(self, database: Database, label: str = "") -> None:
        self.db = database
        #: The backend mode: PostgreSQL (row lock, change feed) or SQLite.
        self.postgresql = isinstance(database, PostgresqlDatabase)
        sqlite = not self.postgresql
        self.label = label or (f"sqlite:///{database.database}" if sqlite else "the store")
        self._guard = threading.local()  # the commit guard of the thread's work, if any
        self.models = create_models(database)  # this store's own (see drc.store.models)
        self._write_lock = threading.Lock()
        self._batch: Batch | None = None  # the open batch(), if any
        self._savepoints = itertools.count()  # names of batch() verbs' savepoints
        self._statements = Statements(database)

    def _tx(self) -> PeeweeTransaction:
        """A transaction object on this store's statements and models (its caller opened the
        database transaction)."""
        return PeeweeTransaction(self.db, self._statements, self.models, self.postgresql)

    @classmethod
    def from_url(cls, url: str, timeouts: StoreTimeouts | None = None) -> PeeweeStore:
        store = cls(open_database(url, timeouts), database_label(url))
        store.migrate()
        return store

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns their names. A migration may rewrite a
        large table: the per-statement timeouts of the verbs do not apply to it."""
        postgres = self.postgresql
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
            if self.postgresql:
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
    def transaction(self, unit: Unit | None = None) -> Iterator[PeeweeTransaction]:
        """One write transaction, or with ``unit.batch`` a savepoint of that batch (a failing
        verb undoes only itself). It records ``unit.request``, if any and not yet recorded
        (:mod:`drc.store.requests`), so a retried request is recognised, never rerun."""
        request = batch = None
        if unit is not None:
            request, batch = unit.request, unit.batch
            if request is not None and request.recorded:
                request = None  # the call's first write transaction recorded it
        if batch is not None:
            if batch is not self._batch:
                raise RuntimeError("a transaction was handed a batch that is not open")
            # named by a counter, as peewee's atomic() names each by a fresh uuid4
            # (Database.savepoint() takes no name), a measurable part of a small verb
            with _savepoint(self.db, f"v{next(self._savepoints)}"):
                tx = self._tx()
                if request is not None:
                    requests.claim(self.db, request)
                yield tx
                if request is not None and tx.created:
                    requests.created(self.db, request, tx.created)
            return
        if self._batch is not None and self.db.in_transaction():
            raise RuntimeError(
                "a write transaction opened inside a batch without its handle: pass the "
                "batch (drc.core.ports.Unit) to make it a savepoint of the batch"
            )
        with self._reachable(), self._write_lock, self.db.atomic():
            tx = self._tx()
            tx.lock()
            if request is not None:
                requests.claim(self.db, request)
            yield tx
            if request is not None and tx.created:
                requests.created(self.db, request, tx.created)
            self._before_commit()

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """Group commit: one write transaction around several verbs, so they share one
        commit (on SQLite one fsync, most of a small verb's cost) instead of one each.

        A :meth:`transaction` handed the yielded :class:`Batch` is a savepoint of this one.
        Nothing is durable before the batch commits: callers answer the verbs' requests only
        after this block exits without error.
        """
        with self._reachable(), self._write_lock, self.db.atomic():
            self._tx().lock()
            self._batch = batch = Batch()
            try:
                yield batch
            finally:
                self._batch = None
            self._before_commit()

    @contextmanager
    def snapshot(self) -> Iterator[PeeweeTransaction]:
        if not self.postgresql:
            # A deferred transaction is a consistent WAL snapshot and takes no write lock.
            with self._reachable(), self.db.atomic("DEFERRED"):
                yield self._tx()
        else:
            with self._reachable(), self.db.atomic():
                yield self._tx()

    def describe(self) -> dict[str, object]:
        postgres = self.postgresql
        return {
            "backend": "postgresql" if postgres else "sqlite",
            "database": self.label if postgres else self.db.database,  # never a password
            "schema": self.schema_version(),
        }

    def close(self) -> None:
        self.db.close()


class Batch:
    """The handle of an open :meth:`PeeweeStore.batch`: what a verb's
    :class:`~drc.core.ports.Unit` carries to make its transaction a savepoint of it."""

    __slots__ = ()


class PeeweeTransaction(
    CredentialRows, ReferenceRows, LimitRows, SlotRows, CleanupRows, NodeRows, VniRows
):
    """The core's :class:`~drc.core.ports.Transaction`, valid inside one ``atomic()`` block:
    the row modules' operations on one store's statements and models."""

    def __init__(
        self, db: Database, statements: Statements, models: Models, postgresql: bool
    ) -> None:
        self.db = db
        self._sql = statements
        self.models = models
        self.created = 0  # the credential this transaction inserted (request records)
        self.postgresql = postgresql
        self.notify_changes = postgresql  # the shared change feed (drc.store.credentials)

    def lock(self) -> None:
        """Make this write transaction the only one, before it reads anything.

        SQLite: already so (BEGIN IMMEDIATE under the store's lock). PostgreSQL: the credential
        counter row, locked FOR UPDATE, is the one lock every write transaction of every DRCS
        takes first; so a credential read after it cannot change before commit, and no
        per-row ``SELECT ... FOR UPDATE`` is needed (nor offered: ``get_credential`` has none).
        """
        if self.postgresql:
            self._sql.rows("lock")
