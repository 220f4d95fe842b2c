"""The store's invariants after a crash, checked by the tests (crash, HA, group commit, workers).

Not part of drc: DRCS keeps these by running each change in one transaction; this reads a
store back and says what a crash would have broken.
"""

from __future__ import annotations

from collections.abc import Iterable

from peewee import JOIN

from drc.store.sql import PeeweeStore


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
