"""The non-FLEX tenant check of an access against the credential's reference count (issue 11).

An access to a non-FLEX credential asks which jobs or processes already hold it on the
caller's node. Before migration 0006 the only index that statement could use was led by
``credential_id`` alone, so it read every reference of the credential: an access storm over
10,000 nodes slowed down as the credential spread. Migration 0006 indexes
``(credential_id, node, ...)``.

Two SQLite stores side by side in one run, the production pragmas, no transport: ``before``
(0006 undone, exactly its ``down()``) and ``after`` (as migrated). Each holds one non-FLEX
credential with ``DRC_BENCH_REFS`` references (default 10,000: one job on each of as many
nodes) and one with 10. Measured in each: the statement alone (µs per call) for both
credentials, and access misses per second (a new job on a new node each) on the big one.
Prints JSON; the ratios are the figures, absolute times only context:

- ``many_over_few``: the statement's cost at DRC_BENCH_REFS references ÷ at 10 (≈ 1: flat);
- ``before_over_after``: the statement at DRC_BENCH_REFS references, before ÷ after;
- ``access_after_over_before``: access misses per second, after ÷ before.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from drc.core.model import Caller, Holder, HolderKind
from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.store.sql import PeeweeStore
from drc.store.statements import Statements

REFS = int(os.environ.get("DRC_BENCH_REFS", "10000"))
CALLS = int(os.environ.get("DRC_BENCH_CALLS", "2000"))
ACCESSES = int(os.environ.get("DRC_BENCH_ACCESSES", "300"))
ROUNDS = 3
OWNER = 2001
FEW = 10

#: Migration 0006 undone: what every store looked like before it.
UNDO_0006 = (
    'DROP INDEX "reference_credential_id_node"',
    'CREATE INDEX "reference_credential_id" ON "reference" ("credential_id")',
)


def _job(job: int, node: str) -> Caller:
    return Caller(uid=OWNER, gid=OWNER, job=job, holder=Holder.for_job(node, job))


def _filled(store: PeeweeStore, svc: CredentialService, refs: int) -> int:
    """A non-FLEX credential held by one job on each of ``refs`` nodes."""
    cred = svc.acquire(_job(1, "n0"), 0).id
    r = store.models.reference
    rows = [
        {"credential": cred, "kind": HolderKind.JOB.value, "node": f"n{i}", "job": 1, "uid": 0}
        for i in range(1, refs)
    ]
    with store.transaction():
        for start in range(0, len(rows), 500):
            r.insert_many(rows[start : start + 500]).execute()
    return cred


def _statement_us(store: PeeweeStore, cred: int, calls: int) -> float:
    """µs per run of the tenant check (on a node in the middle of the credential's)."""
    sql = Statements(store.db).sql("tenants_on_node")
    node = f"n{REFS // 2}"
    with store.snapshot():
        for _ in range(50):  # warm the statement cache and the pages
            store.db.execute_sql(sql, (cred, node)).fetchall()
        t0 = time.perf_counter()
        for _ in range(calls):
            store.db.execute_sql(sql, (cred, node)).fetchall()
        return (time.perf_counter() - t0) / calls * 1e6


def _access_per_s(svc: CredentialService, cred: int, accesses: int, first: int) -> float:
    """Access misses per second: each a new job on a new node, so each runs the check."""
    t0 = time.perf_counter()
    for i in range(first, first + accesses):
        svc.access(_job(1000 + i, f"new{i}"), cred)
    return accesses / (time.perf_counter() - t0)


class Side:
    """One store of the comparison, filled: a credential with 10 references, one with REFS."""

    def __init__(self, state: Path, before: bool) -> None:
        self.store = PeeweeStore.from_url(f"sqlite:///{state}/{'before' if before else 'after'}.db")
        if before:
            with self.store.db.atomic():
                for sql in UNDO_0006:
                    self.store.db.execute_sql(sql)
        pool = PoolProvider(cookie_min=1, cookie_max=1 << 20)
        self.svc = CredentialService(self.store, pool, Policy())
        self.few = _filled(self.store, self.svc, FEW)
        self.many = _filled(self.store, self.svc, REFS)
        self.accessed = 0
        # No ANALYZE: drc never runs it, so the planner sees what a production store shows it.
        plan = self.store.db.execute_sql(
            "EXPLAIN QUERY PLAN " + Statements(self.store.db).sql("tenants_on_node"),
            (self.many, "n1"),
        ).fetchall()
        self.plan = " ".join(row[-1] for row in plan)

    def round(self) -> tuple[float, float, float]:
        """(µs at 10 references, µs at REFS, access misses per second at REFS)."""
        few = _statement_us(self.store, self.few, CALLS)
        many = _statement_us(self.store, self.many, CALLS)
        rate = _access_per_s(self.svc, self.many, ACCESSES, self.accessed)
        self.accessed += ACCESSES
        return few, many, rate


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="drc-bench-tenants-"))
    try:
        sides = {"before_0006": Side(state, True), "after_0006": Side(state, False)}
        best = {name: [float("inf"), float("inf"), 0.0] for name in sides}
        for _ in range(ROUNDS):  # alternated, best of each: both see the same machine
            for name, side in sides.items():
                few, many, rate = side.round()
                b = best[name]
                b[0], b[1], b[2] = min(b[0], few), min(b[1], many), max(b[2], rate)
        for side in sides.values():
            side.store.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    result: dict[str, object] = {"refs": REFS, "rounds": ROUNDS}
    for name, (few, many, rate) in best.items():
        result[name] = {
            "plan": sides[name].plan,
            "statement_us_10_refs": round(few, 2),
            f"statement_us_{REFS}_refs": round(many, 2),
            "many_over_few": round(many / few, 2),
            f"access_miss_per_s_{REFS}_refs": round(rate, 1),
        }
    before, after = best["before_0006"], best["after_0006"]
    result["before_over_after"] = round(before[1] / after[1], 1)
    result["access_after_over_before"] = round(after[2] / before[2], 2)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
