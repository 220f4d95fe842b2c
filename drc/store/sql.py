"""The DRCS store on Peewee: SQLite (default, WAL) or PostgreSQL, chosen by URL.

:class:`PeeweeStore` is :mod:`drc.core.ports`'s store: it opens transactions and migrates.
:class:`PeeweeTransaction` is what a verb works on inside one; its operations live in one row
module per table group (:mod:`~drc.store.credentials`, :mod:`~drc.store.references`,
:mod:`~drc.store.limits`, :mod:`~drc.store.slots`, :mod:`~drc.store.cleanups`,
:mod:`~drc.store.nodes`, :mod:`~drc.store.vni`), over the hand-written statements of
:mod:`~drc.store.statements` (what every verb runs) or Peewee queries (the rest). Opening a
database by URL is :mod:`~drc.store.database`.

Write transactions on SQLite are exclusive: SQLite takes its write lock at BEGIN
(``IMMEDIATE``) under an in-process lock (one DRCS per file). On PostgreSQL, which several
DRCS share, a write transaction takes only the locks its verb declares
(:class:`~drc.core.ports.Transaction`), always in this order, so two verbs of two DRCS wait
for each other only when they touch the same thing:

========================================  =================================================
verb                                      locks, held until commit
========================================  =================================================
access (a miss or a hit), token refs      the credential's row ``FOR KEY SHARE``: other
                                          accesses go on together; a release, grant, revoke
                                          or free waits
release (freeing or not), grant, revoke   the credential's row ``FOR UPDATE``
job end, node reboot, process exit,       the rows of the credentials whose references they
unpin                                     drop, ``FOR UPDATE``, in id order, before dropping
acquire                                   the limits' advisory lock shared (a limit change
                                          waits), then, for each scope a limit counts
                                          (total, uid, gid, job), that scope's advisory lock
                                          exclusive: acquires of one user under a per-user
                                          limit wait for each other, others' do not
an access pinning another user's          as an access, then as an acquire, for the user's
credential under a limit                  limits
set or clear a limit                      the limits' advisory lock exclusive
Slingshot VNI claim                       the VNI pool's advisory lock
========================================  =================================================

Why that keeps everything exact across DRCS:

- **References.** A release counts the references left while holding the credential
  exclusive, and frees it only at 0; an access adds its reference while holding it shared. So
  an access either commits first (the release then counts it and frees nothing) or waits and
  reads the credential after the release committed (gone, or RELEASED: refused). No access is
  ever answered whose reference went with a freed credential.
- **Limits.** An acquire counts usage only while holding the scope's lock, so the next
  acquire under that limit counts after the first committed; a limit changes only while no
  acquire that read the limits is open.
- **The pool.** A returned slot is one ``free_slot`` row, claimed by deleting it: a claim
  skips rows another transaction is claiming (``FOR UPDATE SKIP LOCKED``), so it never waits
  and never takes a slot twice. Growing the pool past its high-water mark updates the pool's
  counter row, which that transaction holds until commit (a per-pool lock, only taken when no
  returned slot is free). Credential ids come from a sequence (migration 0008), which no
  transaction holds.

Statements read after a lock see everything committed before it (READ COMMITTED takes a
snapshot per statement), which is why the locks are statements of their own, before the
reads. A verb names the credentials it locks when it opens its transaction
(:meth:`PeeweeStore.transaction` ``hold``), which takes them right after recording the
request, before the verb runs. A transaction on its own waits for its locks (up to
``db_lock_timeout``). A group commit's transaction never waits: it sets ``lock_timeout`` to
1 ms, a verb of it whose lock another transaction holds is undone (its savepoint) as
:class:`~drc.core.ports.Contended`, and the group commit runs it again alone after the group
committed. A group holds several verbs' locks in no particular order, and groups never wait,
so no two transactions ever wait for each other in a cycle: several DRCS never deadlock.
Only a group's COMMIT may wait, when a verb sent the change feed a NOTIFY: it then takes
PostgreSQL's one lock on the notification queue, which another NOTIFYing commit holds for a
moment, and waits for it up to ``db_lock_timeout``. That holder is committing (it waits for
nothing of ours), so this wait closes no cycle either.

Round trips are what a PostgreSQL verb costs (a statement's is ~0.1-0.3 ms on a loaded
machine, and the store thread runs one at a time), so in a group commit a verb's savepoint,
the release of the previous verb's, its request record and its credential locks go to the
server in front of the verb's first statement, as one simple query of several statements,
their values quoted in by the driver (:class:`~drc.store.statements.Opening`,
:meth:`PeeweeStore._verb_savepoint`): a batched access makes two round trips (that one,
carrying the credential read, and the reference's INSERT), where it made seven, and a
batched hello one. A transaction on its own sends its request record and locks with its
first statement the same way. The claim's outcome is read before that statement's rows:
a request recorded before is :class:`~drc.store.requests.Replayed`, and the savepoint (or
the transaction) undoes what the statement that rode with it did. The store prepares its
statements on each connection itself (planned once, executed by name: ``EXECUTE``, which
an opening can go in front of), outside transactions; the driver's own preparing is off,
as it deallocates every prepared statement at each rollback.

The store has two modes, both explicit here:

- **the backend** (:attr:`PeeweeStore.postgresql`): PostgreSQL takes the locks above and
  announces revokes and frees on the shared change feed (``NOTIFY``); SQLite needs neither
  (one DRCS per file, ``BEGIN IMMEDIATE``).
- **the batch** (:meth:`PeeweeStore.batch`): a group commit's one transaction, yielded as a
  :class:`Batch` handle. A :meth:`PeeweeStore.transaction` handed that batch (in its
  :class:`~drc.core.ports.Unit`) is a savepoint of it; one opened without it while the batch
  is open on the same connection is refused (it could neither be a transaction of its own nor
  silently join the batch).

What a write transaction records besides its change is handed to it too: the unit's
:class:`~drc.core.ports.Request`, claimed once (:mod:`drc.store.requests`), first thing.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from contextlib import contextmanager

from peewee import (
    Database,
    InterfaceError,
    OperationalError,
    PostgresqlDatabase,
)
from playhouse.migrations import Runner

from drc.core.model import COUNTED_BY, LimitScope
from drc.core.ports import Contended, Request, StoreUnavailable, Unit
from drc.store import requests
from drc.store.cleanups import CleanupRows
from drc.store.credentials import CredentialRows
from drc.store.database import MIGRATIONS, StoreTimeouts, database_label, open_database
from drc.store.limits import LimitRows
from drc.store.models import Models, create_models
from drc.store.nodes import NodeRows
from drc.store.references import ReferenceRows
from drc.store.slots import SlotRows
from drc.store.statements import (
    Opening,
    Statements,
    chunks,
    control,
    drop_opening,
    flush_opening,
    literal,
    padded,
    prepare_waiting,
    run,
    send_with_next,
)
from drc.store.vni import VniRows


class PeeweeStore:
    """The core's :class:`~drc.core.ports.Store` on one database (see the module doc)."""

    def __init__(self, database: Database, label: str = "") -> None:
        self.db = database
        #: The backend mode: PostgreSQL (per-verb locks, change feed) or SQLite.
        self.postgresql = isinstance(database, PostgresqlDatabase)
        sqlite = not self.postgresql
        self.label = label or (f"sqlite:///{database.database}" if sqlite else "the store")
        self._guard = threading.local()  # the commit guard of the thread's work, if any
        self.models = create_models(database)  # this store's own (see drc.store.models)
        self._write_lock = threading.Lock()
        self._batch: Batch | None = None  # the open batch(), if any
        self._savepoints = itertools.count()  # names of batch() verbs' savepoints
        #: PostgreSQL: what the open batch sends with its next verb's SAVEPOINT (its lock
        #: timeout, the release of the previous verb's savepoint)
        self._unsent: list[str] = []
        self._batch_notified = False  # a verb of the open batch NOTIFYed (PostgreSQL)
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
            unavailable = self._unavailable(err)
            if unavailable is None:
                raise
            raise unavailable from None

    def _unavailable(self, err: OperationalError | InterfaceError) -> StoreUnavailable | None:
        """What :meth:`_reachable` makes of ``err`` (None: not the database's silence)."""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if self.postgresql:
            kind = "PostgreSQL"
            with contextlib.suppress(Exception):
                self.db.close()
        elif "locked" in first or "busy" in first:
            kind, first = "SQLite", f"{first} (another process holds its write lock)"
        else:
            return None
        return StoreUnavailable(f"the {kind} database ({self.label}) did not answer: {first}")

    @contextmanager
    def transaction(
        self, unit: Unit | None = None, *, hold: Collection[int] = (), exclusive: bool = False
    ) -> Iterator[PeeweeTransaction]:
        """One write transaction, or with ``unit.batch`` a savepoint of that batch (a failing
        verb undoes only itself). It records ``unit.request``, if any and not yet recorded
        (:mod:`drc.store.requests`), so a retried request is recognised, never rerun; then
        it holds the credentials ``hold`` (:meth:`PeeweeTransaction.lock_credentials`,
        shared or ``exclusive``) before the verb reads anything."""
        request = batch = None
        if unit is not None:
            request, batch = unit.request, unit.batch
            if request is not None and request.recorded:
                request = None  # the call's first write transaction recorded it
        now = time.time()
        if batch is not None:
            if batch is not self._batch:
                raise RuntimeError("a transaction was handed a batch that is not open")
            if not self.postgresql:
                yield from self._sqlite_verb(request, hold, exclusive, now)
                return
            with (
                _unclaimed_on_error(request),
                self._uncontended(),
                self._verb_savepoint(self._opening(request, hold, exclusive, now)) as opening,
            ):
                tx = yield from self._verb(request, hold, exclusive, opening, now)
                self._batch_notified |= tx.notified
            return
        if self._batch is not None and self.db.in_transaction():
            raise RuntimeError(
                "a write transaction opened inside a batch without its handle: pass the "
                "batch (drc.core.ports.Unit) to make it a savepoint of the batch"
            )
        if not self.postgresql:
            yield from self._sqlite_transaction(request, hold, exclusive, now)
            return
        self._prepare_waiting()
        with _unclaimed_on_error(request), self._reachable(), self._write_lock, self.db.atomic():
            statements = self._opening(request, hold, exclusive, now)
            opening = Opening(statements, len(statements)) if statements else None
            if opening is not None:
                send_with_next(self.db, opening)
            try:
                yield from self._verb(request, hold, exclusive, opening, now)
            finally:
                drop_opening(self.db)  # not sent: the verb failed first (rolled back)
            self._before_commit()

    def _prepare_waiting(self) -> None:
        """PostgreSQL, before a transaction: prepare the statements noted since the last
        (:func:`~drc.store.statements.prepare_waiting`: it returns at once when none wait,
        and raises nothing, so it takes no lock and maps no error)."""
        if self.postgresql and not self.db.in_transaction():
            prepare_waiting(self.db)

    def _opening(
        self, request: Request | None, hold: Collection[int], exclusive: bool, now: float
    ) -> list[str]:
        """PostgreSQL: what opens a verb's transaction, sent with its first statement (an
        :class:`~drc.store.statements.Opening`): the request's claim, then the credentials'
        locks (values quoted in). SQLite: nothing."""
        if not self.postgresql:
            return []
        claim = [requests.claim_literal(self.db, request, now)] if request is not None else []
        return claim + self._tx().lock_literals(hold, exclusive=exclusive)

    def _verb(
        self,
        request: Request | None,
        hold: Collection[int],
        exclusive: bool,
        opening: Opening | None,
        now: float,
    ) -> Generator[PeeweeTransaction, None, PeeweeTransaction]:
        """A verb's part of the transaction or savepoint opened for it, the same whichever
        opened it: its request claimed and its credentials held (on PostgreSQL by the
        ``opening`` its first statement carries, whose claim is checked before that
        statement's rows are read; on SQLite now: its write lock is the only lock), the verb
        run (the transaction yielded to it), then what it created recorded for its request.
        Returns the transaction."""
        tx = self._tx()
        if opening is not None:
            if request is not None:
                db = self.db
                opening.then(lambda counts: requests.claimed(db, request, counts[0] > 0, now))
        elif request is not None:
            requests.claim(self.db, request, now)
        if not self.postgresql:
            tx.lock_credentials(hold, exclusive=exclusive)
        yield tx
        if opening is not None:
            flush_opening(self.db)  # a verb that ran no statement: claimed and held now
        if request is not None and tx.created:
            requests.created(self.db, request, tx.created)
        return tx

    def _send(self, statements: list[str]) -> list[int]:
        """PostgreSQL: run these statements (no parameters: values quoted in) as one simple
        query, one round trip; the row count of each."""
        if not statements:
            return []
        cursor = run(self.db, "; ".join(statements))
        counts = [cursor.rowcount]
        while cursor.nextset():
            counts.append(cursor.rowcount)
        return counts

    def _sqlite_transaction(
        self, request: Request | None, hold: Collection[int], exclusive: bool, now: float
    ) -> Iterator[PeeweeTransaction]:
        """A write transaction of its own on SQLite: :meth:`transaction`'s body, flat, as
        :meth:`_sqlite_verb` is: BEGIN IMMEDIATE to COMMIT, or ROLLBACK when the verb (or the
        commit guard, or the COMMIT) fails. Peewee's atomic() cost ~2.5 us of Python around
        the two statements (a lone cache miss is one such transaction). Peewee's transaction
        stack holds it all the same, so an atomic() inside is a savepoint, as it was."""
        db = self.db
        with self._write_lock:
            try:
                control(db, "BEGIN IMMEDIATE")
                db.push_transaction(self)
                try:
                    yield from self._verb(request, hold, exclusive, None, now)
                    self._before_commit()
                    control(db, "COMMIT")
                except BaseException:
                    if request is not None:  # as _unclaimed_on_error
                        request.recorded = False
                    if db.connection().in_transaction:  # a failed COMMIT may have ended it
                        control(db, "ROLLBACK")
                    raise
                finally:
                    db.pop_transaction()
            except (OperationalError, InterfaceError) as err:  # as _reachable
                unavailable = self._unavailable(err)
                if unavailable is None:
                    raise
                raise unavailable from None

    def _sqlite_verb(
        self, request: Request | None, hold: Collection[int], exclusive: bool, now: float
    ) -> Iterator[PeeweeTransaction]:
        """A verb of the open batch on SQLite: :meth:`transaction`'s body, flat. Its savepoint
        is released when the verb succeeds, rolled back with its request's claim when it
        fails. No context manager per layer: an access is a few microseconds of SQLite, and
        each layer cost as much.

        Every verb's savepoint has the same name: SQLite stacks savepoints of one name and
        RELEASE or ROLLBACK TO takes the newest, which is the running verb's (a failed verb's
        stays below it, released at COMMIT, as it always was). So the three statements are
        the same text every time, prepared once in sqlite3's statement cache instead of for
        each verb (a name per verb cost ~3 us of SQLite parsing each)."""
        db = self.db
        name = '"verb"'
        run(db, f"SAVEPOINT {name};")
        try:
            yield from self._verb(request, hold, exclusive, None, now)
            run(db, f"RELEASE SAVEPOINT {name};")
        except BaseException:
            if request is not None:  # as _unclaimed_on_error
                request.recorded = False
            run(db, f"ROLLBACK TO SAVEPOINT {name};")
            raise

    @contextmanager
    def _verb_savepoint(self, then: list[str]) -> Iterator[Opening]:
        """A verb of the open batch: its savepoint, rolled back when the verb fails.

        Named by a counter, as peewee's atomic() names each by a fresh uuid4
        (Database.savepoint() takes no name), a measurable part of a small verb. On
        PostgreSQL a verb that succeeded keeps its savepoint until the next verb's
        ``SAVEPOINT``, which releases it in the same round trip (one simple query of
        several statements), or the batch's COMMIT, which releases every savepoint; the
        statements ``then`` (the request's claim and the verb's locks, values quoted in) go
        in that round trip too, and so does the verb's first statement: the yielded
        :class:`~drc.store.statements.Opening` waits for it. The batch's first verb also
        sends the batch's lock timeout. So a verb's savepoints, claim and locks cost no
        round trip of their own, where they cost four. PostgreSQL's only: on SQLite (one
        statement per call, no round trip) :meth:`_sqlite_verb`.
        """
        name = f"v{next(self._savepoints)}"
        taken, self._unsent = self._unsent, []
        opening = Opening([*taken, f"SAVEPOINT {name}", *then], len(then))
        send_with_next(self.db, opening)
        try:  # a claim or lock that fails (one it may not wait for) is undone as the verb is
            yield opening
        except BaseException:
            drop_opening(self.db)
            if not opening.sent:
                self._unsent = taken  # nothing sent: no savepoint, the release still owed
                raise
            self.db.execute_sql(f"ROLLBACK TO SAVEPOINT {name}")  # kept: released next
            self._unsent = [f"RELEASE SAVEPOINT {name}"]
            raise
        self._unsent = [f"RELEASE SAVEPOINT {name}"]

    @contextmanager
    def _uncontended(self) -> Iterator[None]:
        """A verb of a group whose lock another transaction holds (its savepoint undone):
        :class:`Contended`, so the group commit runs it alone after the group."""
        try:
            yield
        except OperationalError as err:
            if self.postgresql and _sqlstate(err) in _CONTENDED:
                raise Contended(str(err).strip().splitlines()[0]) from None
            raise

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """Group commit: one write transaction around several verbs, so they share one
        commit (on SQLite one fsync, most of a small verb's cost) instead of one each.

        A :meth:`transaction` handed the yielded :class:`Batch` is a savepoint of this one.
        Nothing is durable before the batch commits: callers answer the verbs' requests only
        after this block exits without error.
        """
        self._prepare_waiting()
        with self._reachable(), self._write_lock, self.db.atomic():
            self._batch = batch = Batch()
            self._unsent = self._tx().batch_opening()  # sent with its first verb
            self._batch_notified = False
            try:
                yield batch
            finally:
                self._batch = None
                self._unsent = []
            if self._batch_notified:  # its COMMIT may wait for the notification queue's lock
                self._send([self._statements.sql("commit_lock_timeout")])
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
        self.notified = False  # it sent the change feed a NOTIFY (delivered at commit)

    def batch_opening(self) -> list[str]:
        """PostgreSQL: a group commit's transaction waits for no lock (see the module doc):
        the statement saying so, sent before the batch's first verb. SQLite: nothing to do
        (BEGIN IMMEDIATE under the store's lock: the only writer)."""
        return [self._sql.sql("batch_lock_timeout")] if self.postgresql else []

    def lock_credentials(self, ids: Iterable[int], *, exclusive: bool) -> None:
        """PostgreSQL: hold these credentials' rows until commit, in id order: shared (an
        access: nobody releases, revokes or frees them meanwhile) or exclusive (a release, a
        grant or revoke, a free: nobody adds a reference meanwhile). Missing ids are
        skipped. Every verb locks its credentials before anything else it locks."""
        if not self.postgresql:
            return
        for name, some in _credential_locks(ids, exclusive):
            self._sql.execute(name, some, in_size=len(some))

    def lock_literals(self, ids: Iterable[int], *, exclusive: bool) -> list[str]:
        """PostgreSQL: :meth:`lock_credentials`' statements with their ids quoted in, to be
        sent with others in one round trip (:meth:`PeeweeStore._verb_savepoint`)."""
        return [
            literal(self.db, self._sql.sql(name, len(some)), some)
            for name, some in _credential_locks(ids, exclusive)
        ]

    def hold_limits(self) -> None:
        """PostgreSQL: no limit is set or cleared until commit (those take this lock
        exclusive, :meth:`lock_limit_changes`); read the limits after this."""
        if self.postgresql:
            self._sql.execute("lock_keys_shared", ([_LIMITS_KEY],))

    def hold_usage(self, uid: int, gid: int, job: int, scopes: Collection[LimitScope]) -> None:
        """PostgreSQL: until commit, nobody else counts against these limits' scopes for
        this caller (one lock per counted scope and id: two acquires by one user wait for
        each other, two users' do not); count after this."""
        if not self.postgresql:
            return
        ids = {"total": 0, "uid": uid, "gid": gid, "job": job}
        keys = sorted(
            {_usage_key(kind, ids[kind]) for kind in {COUNTED_BY[scope] for scope in scopes}}
        )
        self._sql.execute("lock_keys", (keys,))

    def lock_limit_changes(self) -> None:
        """PostgreSQL: the limits' lock, exclusive (setting or clearing one)."""
        if self.postgresql:
            self._sql.execute("lock_keys", ([_LIMITS_KEY],))

    def lock_vni_pool(self) -> None:
        """PostgreSQL: one VNI claim at a time (claims read the pool, then write a row)."""
        if self.postgresql:
            self._sql.execute("lock_keys", ([_VNI_POOL_KEY],))


def _credential_locks(ids: Iterable[int], exclusive: bool) -> Iterator[tuple[str, list[int]]]:
    """The statements that lock these credentials, in id order: (name, its padded ids)."""
    name = "lock_credentials" if exclusive else "lock_credentials_shared"
    for chunk in chunks(sorted(set(ids))):
        yield name, padded(chunk)


#: PostgreSQL's "lock not available" (lock_timeout) and "deadlock detected".
_CONTENDED = frozenset({"55P03", "40P01"})


@contextmanager
def _unclaimed_on_error(request: Request | None) -> Iterator[None]:
    """A transaction or savepoint that rolls back takes its request record with it: the
    request is unclaimed again, so the call's next transaction (a contended verb rerun alone
    after its group) records it."""
    try:
        yield
    except BaseException:
        if request is not None:
            request.recorded = False
        raise


def _sqlstate(err: BaseException) -> str | None:
    """The SQLSTATE of the driver's error behind Peewee's wrapper, if any."""
    for inner in (err.__cause__, err.__context__, *err.args):
        code = getattr(inner, "sqlstate", None)
        if code:
            return code
    return None


#: Advisory lock keys (bigint, one space per database: a prefix of drc's own keeps other
#: users of the database out of it): the limits, the VNI pool, and one per counted scope.
_KEY_PREFIX = 0x647263 << 36  # "drc"
_LIMITS_KEY = _KEY_PREFIX
_VNI_POOL_KEY = _KEY_PREFIX + 1
_SCOPES = {"total": 1, "uid": 2, "gid": 3, "job": 4}


def _usage_key(kind: str, id: int) -> int:
    return _KEY_PREFIX + (_SCOPES[kind] << 32) + id
