"""Store operations of the Slingshot provider's VNI pool (tables of migration 0005).

Mixed into :class:`drc.store.sql.PeeweeTransaction`, so they run inside the verb's
transaction like the pool's slots; only the ``slingshot`` provider calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from peewee import fn

from drc.store.models import Models

LIVE, CLEANUP, FREE = "live", "cleanup", "free"


class VniRows:
    models: Models  # the store's own model classes (set by the transaction)
    lock_vni_pool: Callable[[], None]  # the transaction's (drc.store.sql)

    def vni_claim(self, vni_min: int, vni_max: int, credential: int, now: float) -> int | None:
        """A never-used VNI of the range (ascending), else the one free longest; None if full.
        One claim at a time across DRCS (it reads the pool, then writes the row it chose)."""
        self.lock_vni_pool()
        VniRow = self.models.vni
        in_range = (VniRow.vni >= vni_min) & (VniRow.vni <= vni_max)
        known = VniRow.select().where(in_range).count()
        vni = None
        if known < vni_max - vni_min + 1:
            high = VniRow.select(fn.MAX(VniRow.vni)).where(in_range).scalar()
            if high is None or high < vni_max:
                vni = vni_min if high is None else high + 1
            else:  # the range grew downwards or has holes: the lowest unknown VNI
                used = {v for (v,) in VniRow.select(VniRow.vni).where(in_range).tuples()}
                vni = next(v for v in range(vni_min, vni_max + 1) if v not in used)
            VniRow.insert(vni=vni, credential=credential, state=LIVE, changed=now).execute()
            return vni
        row = (
            VniRow.select(VniRow.vni)
            .where(in_range & (VniRow.state == FREE))
            .order_by(VniRow.changed, VniRow.vni)
            .first()
        )
        if row is None:
            return None
        VniRow.update(credential=credential, state=LIVE, changed=now).where(
            VniRow.vni == row.vni
        ).execute()
        return row.vni

    def vni_release(self, vni: int, credential: int, now: float) -> None:
        """The credential was freed: its VNI waits for node cleanups and the quarantine."""
        VniRow = self.models.vni
        VniRow.update(state=CLEANUP, changed=now).where(
            (VniRow.vni == vni) & (VniRow.credential == credential) & (VniRow.state == LIVE)
        ).execute()

    def vni_finish(self, vni: int, credential: int, now: float) -> None:
        """Cleanup done: the VNI may be handed out again (idempotent)."""
        VniRow = self.models.vni
        VniRow.update(state=FREE, changed=now).where(
            (VniRow.vni == vni) & (VniRow.credential == credential) & (VniRow.state == CLEANUP)
        ).execute()

    def vni_row(self, vni: int) -> tuple[int, str, float] | None:
        """(credential, state, changed) of a VNI."""
        VniRow = self.models.vni
        row = VniRow.get_or_none(VniRow.vni == vni)
        return None if row is None else (row.credential, row.state, row.changed)

    def vni_counts(self, vni_min: int, vni_max: int) -> dict[str, int]:
        VniRow = self.models.vni
        in_range = (VniRow.vni >= vni_min) & (VniRow.vni <= vni_max)
        query = VniRow.select(VniRow.state, fn.COUNT(VniRow.vni)).where(in_range)
        return dict(query.group_by(VniRow.state).tuples())

    def vni_owe(self, credential: int, vni: int, node: str) -> None:
        """``node`` may build CXI services for this credential's VNI: it must confirm later."""
        VniNodeRow = self.models.vni_node
        VniNodeRow.insert(credential=credential, node=node, vni=vni).on_conflict_ignore().execute()

    def vni_owing_nodes(self, credential: int) -> list[str]:
        VniNodeRow = self.models.vni_node
        query = VniNodeRow.select(VniNodeRow.node).where(VniNodeRow.credential == credential)
        return sorted(n for (n,) in query.tuples())

    def vni_node_state(self, node: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(live, owed) (credential, VNI) pairs of ``node``: live ones have references there;
        owed ones are freed credentials (or ones without references there) it must confirm."""
        VniNodeRow = self.models.vni_node
        VniRow = self.models.vni
        ReferenceRow = self.models.reference
        referenced = {
            c
            for (c,) in ReferenceRow.select(ReferenceRow.credential)
            .where(ReferenceRow.node == node)
            .distinct()
            .tuples()
        }
        live_rows = VniRow.select(VniRow.credential, VniRow.vni).where(VniRow.state == LIVE)
        live = {c: v for c, v in live_rows.tuples()}
        on_node = sorted((c, live[c]) for c in referenced if c in live)
        owed = sorted(
            (c, v)
            for c, v in VniNodeRow.select(VniNodeRow.credential, VniNodeRow.vni)
            .where(VniNodeRow.node == node)
            .tuples()
            if c not in live
        )
        return on_node, owed

    def vni_confirm(self, node: str, credentials: Iterable[int], now: float) -> list[int]:
        """``node`` destroyed its services of these freed credentials; those confirmed.

        The quarantine of their VNIs restarts now: packets still in flight drain after the
        last service is gone, not after the release."""
        VniNodeRow = self.models.vni_node
        VniRow = self.models.vni
        ids = sorted(set(credentials))
        if not ids:
            return []
        live = {
            c
            for (c,) in VniRow.select(VniRow.credential)
            .where(VniRow.credential.in_(ids) & (VniRow.state == LIVE))
            .tuples()
        }
        done = [c for c in ids if c not in live]
        if done:
            VniNodeRow.delete().where(
                (VniNodeRow.node == node) & VniNodeRow.credential.in_(done)
            ).execute()
            VniRow.update(changed=now).where(
                VniRow.credential.in_(done) & (VniRow.state == CLEANUP)
            ).execute()
        return done
