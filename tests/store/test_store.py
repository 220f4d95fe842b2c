"""The Peewee store: migrations, set-based expiration, pool slots, concurrent writers."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from store_consistency import consistency_problems

from drc.core.errors import Code, DrcError
from drc.core.model import Flags, LimitScope, State
from drc.core.policy import Policy
from drc.core.ports import Request, StoreUnavailable, Unit
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.store.database import StoreTimeouts
from drc.store.sql import PeeweeStore

from helpers import (
    ALICE,
    BOB,
    LATEST_MIGRATION,
    ROOT,
    in_job,
    migrations_after,
    statements_run,
)
from scale import record, size


def test_migrations_are_versioned_and_applied_once(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/drcs.db"
    store = PeeweeStore.from_url(url)
    assert store.schema_version() == LATEST_MIGRATION
    assert store.migrate() == []  # nothing pending the second time
    indexes = {i.name for i in store.db.get_indexes("credential")}
    assert {"credential_uid", "credential_gid"} <= indexes
    store.close()
    names = {
        r[0]
        for r in sqlite3.connect(tmp_path / "drcs.db").execute(
            "select name from sqlite_master where type='table'"
        )
    }
    assert {"credential", "grant", "reference", "credential_limit", "schema_migration"} <= names


def test_sqlite_runs_in_wal_mode(store: PeeweeStore):
    assert store.db.execute_sql("pragma journal_mode").fetchone()[0] == "wal"


def test_expiring_one_job_over_1000_nodes_takes_a_handful_of_statements(service):
    owner = in_job(ALICE, 10, node="node0")
    creds = [service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id for _ in range(8)]
    with service.store.transaction():  # 8,000 references, written set-based
        service.store.models.reference.insert_many(
            [
                {"credential": c, "kind": "job", "node": f"node{n}", "job": 10, "owner": True}
                for c in creds
                for n in range(1, 1000)
            ]
        ).execute()
    assert service.get(ROOT, creds[0]).refs == 1000
    with statements_run(service.store.db) as sent:
        freed = service.expire_jobs([10])
    assert sorted(freed) == creds
    # drop (2), count (1), load (3), one slot return each, delete (1), commit bookkeeping
    assert len(sent) <= 12 + len(creds), sent
    assert consistency_problems(service.store) == []


def test_a_freed_slot_is_reused_lowest_first(service: CredentialService):
    ids = [service.acquire(in_job(ALICE, 10), 0) for _ in range(4)]
    service.expire_jobs([10])
    again = [service.acquire(in_job(BOB, 20), 0).resources.cookie1 for _ in range(4)]
    assert sorted(again) == sorted(c.resources.cookie1 for c in ids)


def _race(url: str, n: int, results) -> None:
    store = PeeweeStore(PeeweeStore.from_url(url).db)
    svc = CredentialService(store, PoolProvider(cookie_min=1, cookie_max=10_000), Policy())
    ok = refused = 0
    for i in range(n):
        try:
            svc.acquire(in_job(ALICE, 100 + i % 3), 0)
            ok += 1
        except DrcError as e:
            assert e.code is Code.ENOSPC
            refused += 1
    results.put((ok, refused))


#: make test: 8 processes x 12 acquires; make stress: 16 x 63 = 1,008 racing acquires.
RACERS, RACES_EACH = size(8, 16), size(12, 63)


def race_acquire_under_limit(
    url: str, processes: int = RACERS, attempts: int = RACES_EACH, backend: str = "sqlite"
) -> None:
    """``processes`` separate DRCS processes on one database race ``attempts`` acquires each
    under a uid limit: exactly the limit succeed, each with its own cookie, the rest ENOSPC."""
    store = PeeweeStore.from_url(url)
    svc = CredentialService(store, PoolProvider(cookie_min=1, cookie_max=10_000), Policy())
    limit = 37
    svc.set_limit(ROOT, LimitScope.UID, ALICE, limit)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(url, attempts, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in procs]
    won = sum(ok for ok, _ in outcomes)
    live = svc.list(ROOT)
    record(
        f"racing acquires under a limit ({backend})",
        "1000 races, 0 overshoot",
        f"{processes * attempts} racing acquires, limit {limit}: {won} granted, "
        f"{len(live)} live, overshoot {max(0, len(live) - limit)}",
        processes * attempts >= 1000 and won == limit == len(live),
    )
    assert won == limit
    assert sum(r for _, r in outcomes) == processes * attempts - limit
    assert len(live) == limit
    assert len({c.resources.cookie1 for c in live}) == limit
    assert consistency_problems(store) == []
    store.close()


def test_eight_processes_racing_acquire_never_exceed_the_limit(tmp_path: Path):
    race_acquire_under_limit(f"sqlite:///{tmp_path}/drcs.db")


def test_upgrading_an_older_schema_keeps_the_data(tmp_path: Path):
    from playhouse.migrations import Runner

    from drc.store.database import MIGRATIONS, open_database

    db = open_database(f"sqlite:///{tmp_path}/drcs.db")
    Runner(db, str(MIGRATIONS)).up(target="0001_initial")
    old = PeeweeStore(db)
    cred = CredentialService(old, PoolProvider(cookie_min=1, cookie_max=9)).acquire(
        in_job(ALICE, 10), 0
    )
    assert old.schema_version() == "0001_initial"
    assert old.migrate() == migrations_after("0001_initial")
    again = CredentialService(old, PoolProvider(cookie_min=1, cookie_max=9))
    assert again.get(ROOT, cred.id).resources.cookie1 == cred.resources.cookie1


def test_a_sqlite_write_transaction_of_its_own_commits_or_rolls_back_whole(
    service: CredentialService,
):
    """SQLite's lone write transaction (BEGIN IMMEDIATE to COMMIT, run flat): a verb that
    fails leaves nothing and unclaims its request; an atomic() inside is a savepoint of it."""
    store = service.store
    cred = service.acquire(in_job(ALICE, 1, "n1"), 0).id
    request = Request("rid-1", "NodeRelease", "digest")
    with pytest.raises(DrcError), store.transaction(Unit(request)) as tx:
        assert request.recorded and store.db.in_transaction()
        with store.db.atomic():  # a savepoint, not a second BEGIN
            tx.set_state(cred, State.RELEASED)
        raise DrcError(Code.EPERM, "refused after a change")
    assert not request.recorded and not store.db.in_transaction()
    assert service.get(in_job(ALICE, 1, "n1"), cred).state is State.ACTIVE
    assert store.db.execute_sql('SELECT COUNT(*) FROM "link_request"').fetchone() == (0,)


def test_a_sqlite_file_locked_by_another_process_is_the_store_not_answering(tmp_path: Path):
    """Held longer than the busy timeout: ECONNREFUSED naming the store, nothing left open."""
    store = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db", StoreTimeouts(busy=0.05))
    other = sqlite3.connect(tmp_path / "drcs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        locked = pytest.raises(StoreUnavailable, match="another process holds its write lock")
        with locked, store.transaction():
            pass
        assert not store.db.in_transaction()
    finally:
        other.execute("ROLLBACK")
    with store.transaction():  # the lock is free again
        pass
    store.close()
