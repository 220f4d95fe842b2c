"""The DRCS store on Peewee: SQLite (default, WAL) or PostgreSQL, chosen by URL.

One method per domain operation, each a few set-based statements. Write transactions are
exclusive: SQLite takes its write lock at BEGIN (``IMMEDIATE``) under an in-process lock;
PostgreSQL locks the credential counter row ``FOR UPDATE`` first, so several DRCS sharing a
database never over-allocate a limit or a cookie.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from peewee import JOIN, Database, IntegrityError, PostgresqlDatabase, SqliteDatabase, fn
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
from drc.store.models import (
    CounterRow,
    CredentialRow,
    FreeSlotRow,
    GrantRow,
    LimitRow,
    NodeRow,
    ReferenceRow,
    database_proxy,
)

MIGRATIONS = Path(__file__).parent / "migrations"
CHUNK = 500  # ids per IN (...) list: far below every engine's bound-parameter limit


def open_database(url: str) -> Database:
    """``sqlite:////var/lib/drc/drcs.db`` or ``postgresql://user@host/db``."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///") or ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(
            path,
            lock_type="IMMEDIATE",
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full",
                "foreign_keys": 1,
                "busy_timeout": 10_000,
            },
        )
    if scheme in ("postgres", "postgresql"):
        return connect_url(url)
    raise ValueError(f"database URL {url!r}: scheme must be sqlite or postgresql")


class PeeweeStore:
    def __init__(self, database: Database) -> None:
        self.db = database
        database_proxy.initialize(database)
        self._write_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> PeeweeStore:
        store = cls(open_database(url))
        store.migrate()
        return store

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns their names."""
        with self._write_lock:
            return Runner(self.db, str(MIGRATIONS)).up()

    def schema_version(self) -> str:
        applied = Runner(self.db, str(MIGRATIONS)).applied()
        return max(applied) if applied else "none"

    @contextmanager
    def transaction(self) -> Iterator[PeeweeTransaction]:
        with self._write_lock, self.db.atomic():
            tx = PeeweeTransaction(self.db)
            tx.lock()
            yield tx

    @contextmanager
    def snapshot(self) -> Iterator[PeeweeTransaction]:
        if isinstance(self.db, SqliteDatabase):
            # A deferred transaction is a consistent WAL snapshot and takes no write lock.
            with self.db.atomic("DEFERRED"):
                yield PeeweeTransaction(self.db)
        else:
            with self.db.atomic():
                yield PeeweeTransaction(self.db)

    def describe(self) -> dict[str, object]:
        backend = "postgresql" if isinstance(self.db, PostgresqlDatabase) else "sqlite"
        return {"backend": backend, "database": self.db.database, "schema": self.schema_version()}

    def close(self) -> None:
        self.db.close()


def _chunks(values: Iterable, size: int = CHUNK) -> Iterator[list]:
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _holder_match(holder: Holder):
    r = ReferenceRow
    return (
        (r.kind == holder.kind.value)
        & (r.node == holder.node)
        & (r.job == holder.job)
        & (r.pid == holder.pid)
        & (r.start == holder.start)
        & (r.uid == holder.uid)
    )


class PeeweeTransaction:
    """The core's :class:`~drc.core.ports.Transaction`, valid inside one ``atomic()`` block."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def lock(self) -> None:
        if isinstance(self.db, PostgresqlDatabase):
            CounterRow.select().where(CounterRow.name == "credential").for_update().execute()

    # -- credentials ---------------------------------------------------------------------

    def next_credential_id(self) -> int:
        """Monotonic uint32 ids; after wrapping, ids still alive are skipped."""
        row = CounterRow.get_by_id("credential")
        candidate = row.value
        for _ in range(UINT32_MAX):
            candidate = candidate % UINT32_MAX + 1
            if not CredentialRow.select().where(CredentialRow.id == candidate).exists():
                break
        CounterRow.update(value=candidate).where(CounterRow.name == "credential").execute()
        return candidate

    def insert_credential(self, c: Credential) -> None:
        r = c.resources
        CredentialRow.insert(
            id=c.id,
            uid=c.uid,
            gid=c.gid,
            wlm=c.wlm,
            flags=int(c.flags),
            state=c.state.value,
            provider=r.provider,
            cookie1=r.cookie1,
            cookie2=r.cookie2,
            ptag=r.ptag,
            provider_data=r.data,
            created=c.created,
            epoch=c.epoch,
        ).execute()

    def get_credential(self, credential: int, *, for_update: bool = False) -> Credential | None:
        found = self.list_credentials([credential])
        return found[0] if found else None

    def list_credentials(self, ids: Iterable[int] | None = None) -> list[Credential]:
        """Credentials with their grants and reference counts, in three queries."""
        query = CredentialRow.select().order_by(CredentialRow.id)
        grants = GrantRow.select(GrantRow.credential, GrantRow.kind, GrantRow.target)
        refs = ReferenceRow.select(ReferenceRow.credential, fn.COUNT(ReferenceRow.id)).group_by(
            ReferenceRow.credential
        )
        if ids is not None:
            ids = list(ids)
            if len(ids) > CHUNK:
                return [c for chunk in _chunks(ids) for c in self.list_credentials(chunk)]
            query = query.where(CredentialRow.id.in_(ids))
            grants = grants.where(GrantRow.credential.in_(ids))
            refs = refs.where(ReferenceRow.credential.in_(ids))
        rows = list(query.tuples())
        if not rows:
            return []
        acl: dict[int, list[Target]] = {}
        for cred_id, kind, target in grants.tuples():
            acl.setdefault(cred_id, []).append(Target(TargetKind(kind), target))
        counts = dict(refs.tuples())
        return [self._credential(row, acl, counts) for row in rows]

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
        CredentialRow.update(state=state.value).where(CredentialRow.id == credential).execute()

    def bump_epoch(self, credential: int) -> None:
        CredentialRow.update(epoch=CredentialRow.epoch + 1).where(
            CredentialRow.id == credential
        ).execute()

    def delete_credentials(self, ids: Iterable[int]) -> None:
        for chunk in _chunks(ids):
            GrantRow.delete().where(GrantRow.credential.in_(chunk)).execute()
            ReferenceRow.delete().where(ReferenceRow.credential.in_(chunk)).execute()
            CredentialRow.delete().where(CredentialRow.id.in_(chunk)).execute()

    def usage(self, uid: int, gid: int, job: int) -> Usage:
        c = CredentialRow
        total, by_uid, by_gid, by_job = (
            c.select(
                fn.COUNT(c.id),
                fn.SUM(c.uid == uid),
                fn.SUM(c.gid == gid),
                fn.SUM((c.wlm == job) & (c.wlm != 0)),
            )
            .tuples()
            .get()
        )
        return Usage(total or 0, int(by_uid or 0), int(by_gid or 0), int(by_job or 0))

    # -- access control list -------------------------------------------------------------

    def add_grant(self, credential: int, target: Target) -> bool:
        try:
            with self.db.atomic():  # a savepoint: the IntegrityError must not poison the tx
                GrantRow.insert(
                    credential=credential, kind=target.kind.value, target=target.id
                ).execute()
        except IntegrityError:
            return False
        return True

    def remove_grant(self, credential: int, target: Target) -> bool:
        g = GrantRow
        return bool(
            g.delete()
            .where(
                (g.credential == credential)
                & (g.kind == target.kind.value)
                & (g.target == target.id)
            )
            .execute()
        )

    # -- references ----------------------------------------------------------------------

    def add_reference(self, credential: int, holder: Holder, owner: bool) -> bool:
        if self.has_reference(credential, holder):
            return False
        ReferenceRow.insert(
            credential=credential,
            kind=holder.kind.value,
            node=holder.node,
            job=holder.job,
            pid=holder.pid,
            start=holder.start,
            uid=holder.uid,
            owner=owner,
        ).execute()
        return True

    def drop_reference(self, credential: int, holder: Holder) -> bool:
        r = ReferenceRow
        return bool(
            r.delete().where((r.credential == credential) & _holder_match(holder)).execute()
        )

    def has_reference(self, credential: int, holder: Holder) -> bool:
        r = ReferenceRow
        return r.select().where((r.credential == credential) & _holder_match(holder)).exists()

    def tenants_on_node(self, credential: int, node: str) -> set[tuple[str, int]]:
        r = ReferenceRow
        rows = (
            r.select(r.kind, r.job, r.pid)
            .where(
                (r.credential == credential) & (r.node == node) & (r.kind != HolderKind.PIN.value)
            )
            .tuples()
        )
        return {
            ("job", job) if kind == HolderKind.JOB.value else ("process", pid)
            for kind, job, pid in rows
        }

    def reference_counts(self, ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        ids = list(ids)
        counts = dict.fromkeys(ids, (0, 0))
        r = ReferenceRow
        for chunk in _chunks(ids):
            query = (
                r.select(r.credential, fn.COUNT(r.id), fn.SUM(r.owner.cast("integer")))
                .where(r.credential.in_(chunk))
                .group_by(r.credential)
                .tuples()
            )
            for cred_id, refs, owners in query:
                counts[cred_id] = (refs, int(owners or 0))
        return counts

    def _drop_where(self, condition) -> set[int]:
        r = ReferenceRow
        touched = {cid for (cid,) in r.select(r.credential).where(condition).distinct().tuples()}
        if touched:
            r.delete().where(condition).execute()
        return touched

    def drop_job_references(self, jobs: Iterable[int]) -> set[int]:
        r = ReferenceRow
        touched: set[int] = set()
        for chunk in _chunks(sorted(set(jobs))):
            touched |= self._drop_where((r.kind == HolderKind.JOB.value) & r.job.in_(chunk))
        return touched

    def drop_node_references(self, node: str) -> set[int]:
        r = ReferenceRow
        return self._drop_where((r.node == node) & (r.kind != HolderKind.PIN.value))

    def drop_process_references(self, node: str, processes: Iterable[tuple[int, int]]) -> set[int]:
        r = ReferenceRow
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
        r = ReferenceRow
        rows = (
            r.select(r.pid, r.start)
            .where((r.kind == HolderKind.PROCESS.value) & (r.node == node))
            .distinct()
            .tuples()
        )
        return set(rows)

    def outstanding_jobs(self) -> set[int]:

        r = ReferenceRow
        jobs = r.select(r.job).where(r.kind == HolderKind.JOB.value).distinct().tuples()
        return {j for (j,) in jobs}

    # -- limits --------------------------------------------------------------------------

    def limits(self) -> list[Limit]:
        return [
            Limit(LimitScope(s), t, v)
            for s, t, v in LimitRow.select(LimitRow.scope, LimitRow.target, LimitRow.value).tuples()
        ]

    def set_limit(self, limit: Limit) -> None:
        LimitRow.insert(scope=limit.scope.value, target=limit.id, value=limit.value).on_conflict(
            conflict_target=[LimitRow.scope, LimitRow.target], update={LimitRow.value: limit.value}
        ).execute()

    def clear_limit(self, scope: LimitScope, id: int) -> bool:
        return bool(
            LimitRow.delete()
            .where((LimitRow.scope == scope.value) & (LimitRow.target == id))
            .execute()
        )

    # -- pool slots ----------------------------------------------------------------------

    def claim_slot(self, pool: str, capacity: int) -> int | None:
        """Reuse the lowest returned slot, else extend the high-water mark."""
        free = (
            FreeSlotRow.select(FreeSlotRow.slot)
            .where((FreeSlotRow.pool == pool) & (FreeSlotRow.slot < capacity))
            .order_by(FreeSlotRow.slot)
            .limit(1)
            .tuples()
            .first()
        )
        if free is not None:
            FreeSlotRow.delete().where(
                (FreeSlotRow.pool == pool) & (FreeSlotRow.slot == free[0])
            ).execute()
            return free[0]
        name = f"pool:{pool}"
        high = CounterRow.select(CounterRow.value).where(CounterRow.name == name).scalar()
        if high is None:
            CounterRow.insert(name=name, value=0).execute()
            high = 0
        if high >= capacity:
            return None
        CounterRow.update(value=high + 1).where(CounterRow.name == name).execute()
        return high

    def return_slot(self, pool: str, slot: int) -> None:
        FreeSlotRow.insert(pool=pool, slot=slot).execute()

    def slots_in_use(self, pool: str) -> int:
        high = CounterRow.select(CounterRow.value).where(CounterRow.name == f"pool:{pool}").scalar()
        free = FreeSlotRow.select().where(FreeSlotRow.pool == pool).count()
        return (high or 0) - free

    # -- nodes ---------------------------------------------------------------------------

    def node_boot_id(self, node: str) -> str | None:
        return NodeRow.select(NodeRow.boot_id).where(NodeRow.name == node).scalar()

    def set_node_boot_id(self, node: str, boot_id: str, now: float) -> None:
        NodeRow.insert(name=node, boot_id=boot_id, seen=now).on_conflict(
            conflict_target=[NodeRow.name], update={NodeRow.boot_id: boot_id, NodeRow.seen: now}
        ).execute()


def consistency_problems(store: PeeweeStore, pools: Iterable[str] = ("pool",)) -> list[str]:
    """Invariants a crash must never break, for slot-based ``pools``; empty when sound."""
    problems: list[str] = []
    with store.snapshot() as tx:
        creds = tx.list_credentials()
        for c in creds:
            if c.refs == 0:
                problems.append(f"credential {c.id} is alive with no reference")
        orphans = (
            ReferenceRow.select(ReferenceRow.credential)
            .join(CredentialRow, JOIN.LEFT_OUTER, on=ReferenceRow.credential == CredentialRow.id)
            .where(CredentialRow.id.is_null())
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
                for (s,) in FreeSlotRow.select(FreeSlotRow.slot)
                .where(FreeSlotRow.pool == pool)
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
