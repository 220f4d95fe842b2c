"""The store's hot verbs in-process: acquire, grant, access (miss), release per second.

Prints JSON. ``CredentialService`` over ``PeeweeStore`` with no transport in between, so the
numbers are what the store and the core cost per verb, and the statement counts say why.
SQLite runs on a temporary file with the production pragmas (WAL, synchronous=FULL). Set
``DRC_BENCH_PG_URL`` to also measure PostgreSQL; that database must be an empty scratch
database: the bench refuses one that already holds drc tables and drops its tables afterwards.

``DRC_BENCH_N`` credentials go through every verb (default 1000). One UID limit is set, as a
site would, so acquire checks limits and usage like it does in production.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from playhouse.test_utils import count_queries

from drc.core.model import UINT32_MAX, Caller, Holder, LimitScope, Target, TargetKind
from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.store.database import open_database
from drc.store.sql import PeeweeStore

N = int(os.environ.get("DRC_BENCH_N", "1000"))
OWNER, PEER = 2001, 2002
ADMIN = Caller(uid=0, gid=0, holder=Holder.pin(0))


def _caller(uid: int, job: int, node: str) -> Caller:
    return Caller(uid=uid, gid=uid, job=job, holder=Holder.for_job(node, job))


def _rate(fn: Callable[[int], object], n: int) -> float:
    """Calls per second of ``fn(i)`` for i in 0..n-1."""
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return round(n / (time.perf_counter() - t0), 1)


def _statements(fn: Callable[[], object]) -> int:
    """Statements one call runs (BEGIN/COMMIT are not counted: Peewee does not log them)."""
    with count_queries() as counter:
        fn()
    return counter.count


def bench(store: PeeweeStore, n: int) -> dict[str, object]:
    svc = CredentialService(store, PoolProvider(cookie_min=1, cookie_max=UINT32_MAX - 1), Policy())
    svc.set_limit(ADMIN, LimitScope.UID, OWNER, 10 * n)
    owner = _caller(OWNER, 1, "n0")
    # access misses: every call is a new (job, node) holder, so each takes a reference
    peer = [_caller(PEER, 2, f"p{i}") for i in range(n + 1)]
    grant = Target(TargetKind.UID, PEER)
    ids: list[int] = []

    rates = {
        "acquire_per_s": _rate(lambda i: ids.append(svc.acquire(owner, 0).id), n),
        "grant_per_s": _rate(lambda i: svc.grant(owner, ids[i], grant), n),
        "access_miss_per_s": _rate(lambda i: svc.access(peer[i], ids[i]), n),
        # the peer lets go first, so the owner's release drops the last reference and frees
        "release_holder_per_s": _rate(lambda i: svc.release(peer[i], ids[i]), n),
        "release_per_s": _rate(lambda i: svc.release(owner, ids[i]), n),
    }
    one = svc.acquire(owner, 0).id
    statements = {
        "acquire": _statements(lambda: svc.acquire(owner, 0)),
        "grant": _statements(lambda: svc.grant(owner, one, grant)),
        "access_miss": _statements(lambda: svc.access(peer[n], one)),
        "access_hit": _statements(lambda: svc.access(peer[n], one)),
        "release_holder": _statements(lambda: svc.release(peer[n], one)),
        "release": _statements(lambda: svc.release(owner, one)),
    }
    return {"n": n, **rates, "statements_per_verb": statements}


def bench_sqlite(n: int) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix="drc-bench-store-"))
    try:
        store = PeeweeStore.from_url(f"sqlite:///{state}/drcs.db")
        try:
            return {"backend": "sqlite", **bench(store, n)}
        finally:
            store.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def bench_postgresql(url: str, n: int) -> dict[str, object]:
    db = open_database(url)
    if db.table_exists("credential"):
        raise SystemExit(f"{url}: already holds drc tables; give the bench a scratch database")
    store = PeeweeStore.from_url(url)
    try:
        return {"backend": "postgresql", **bench(store, n)}
    finally:
        store.db.drop_tables([*store.models.all], safe=True, cascade=True)
        store.db.execute_sql("DROP TABLE IF EXISTS schema_migration")
        store.close()


def main() -> int:
    results = [bench_sqlite(N)]
    pg_url = os.environ.get("DRC_BENCH_PG_URL")
    if pg_url:
        results.append(bench_postgresql(pg_url, N))
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
