"""Store operations on references: who holds each credential (table ``reference``).

Mixed into :class:`drc.store.sql.PeeweeTransaction`. Adding, dropping and finding one holder,
the tenants of a node and the counts are statements of :data:`HOT_SQL` (every verb runs
them); dropping a node's, a job's or a process's references and listing holders are Peewee
queries (a daemon's cleanup, not a verb's path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import itemgetter

from peewee import fn

from drc.core.model import Holder, HolderKind
from drc.store.models import Models
from drc.store.statements import HOLDER_KEY, Statements, chunks, padded

#: A reference's unique key in the order this module names it; its order in the statements
#: is the model's (:data:`HOLDER_KEY`), mapped by the getter.
_NAMED = ("credential", "kind", "node", "job", "pid", "start", "uid")
assert sorted(_NAMED) == sorted(HOLDER_KEY), "a field of the holder key is not named here"
_TO_KEY = itemgetter(*(_NAMED.index(name) for name in HOLDER_KEY))


def holder_values(credential: int, holder: Holder) -> tuple:
    """A reference's unique key in :data:`HOLDER_KEY` order."""
    h = holder
    return _TO_KEY((credential, h.kind.value, h.node, h.job, h.pid, h.start, h.uid))


class ReferenceRows:
    models: Models
    _sql: Statements
    lock_credentials: Callable[..., None]  # the transaction's (drc.store.sql)

    def add_reference(self, credential: int, holder: Holder, owner: bool) -> bool:
        """One INSERT; the unique holder index turns a second one into a no-op (rowcount 0)."""
        cursor = self._sql.execute(
            "add_reference", (*holder_values(credential, holder), bool(owner))
        )
        return cursor.rowcount > 0

    def drop_reference(self, credential: int, holder: Holder) -> bool:
        cursor = self._sql.execute("drop_reference", holder_values(credential, holder))
        return cursor.rowcount > 0

    def has_reference(self, credential: int, holder: Holder) -> bool:
        return bool(self._sql.rows("has_reference", holder_values(credential, holder)))

    def tenants_on_node(self, credential: int, node: str) -> set[tuple[str, int]]:
        return {
            ("job", job) if kind == HolderKind.JOB.value else ("process", pid)
            for kind, job, pid in self._sql.rows("tenants_on_node", (credential, node))
        }

    def reference_counts(self, ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        ids = list(ids)
        counts = dict.fromkeys(ids, (0, 0))
        for chunk in chunks(ids):
            some = padded(chunk)
            for cred_id, refs, owners in self._sql.rows(
                "reference_counts", some, in_size=len(some)
            ):
                counts[cred_id] = (refs, int(owners or 0))
        return counts

    def _drop_where(self, *conditions) -> set[int]:
        """Drop the references matching any of ``conditions``; the credentials touched, held
        exclusive first, all at once in id order (they are settled next: no access may add a
        reference to one being freed). Only references of those are dropped: one taken on
        another credential between the two statements stays, as if taken after this
        transaction."""
        r = self.models.reference
        touched: set[int] = set()
        for condition in conditions:
            rows = r.select(r.credential).where(condition).distinct().tuples()
            touched |= {cid for (cid,) in rows}
        if touched:
            self.lock_credentials(touched, exclusive=True)
            for chunk in chunks(sorted(touched)):
                for condition in conditions:
                    r.delete().where(condition & r.credential.in_(chunk)).execute()
        return touched

    def drop_job_references(self, jobs: Iterable[int]) -> set[int]:
        r = self.models.reference
        return self._drop_where(
            *(
                (r.kind == HolderKind.JOB.value) & r.job.in_(chunk)
                for chunk in chunks(sorted(set(jobs)))
            )
        )

    def drop_job_references_on_node(self, node: str, jobs: Iterable[int]) -> set[int]:
        r = self.models.reference
        return self._drop_where(
            *(
                (r.kind == HolderKind.JOB.value) & (r.node == node) & r.job.in_(chunk)
                for chunk in chunks(sorted(set(jobs)))
            )
        )

    def drop_node_references(self, node: str) -> set[int]:
        r = self.models.reference
        return self._drop_where((r.node == node) & (r.kind != HolderKind.PIN.value))

    def drop_process_references(self, node: str, processes: Iterable[tuple[int, int]]) -> set[int]:
        r = self.models.reference
        return self._drop_where(
            *(
                (r.kind == HolderKind.PROCESS.value)
                & (r.node == node)
                & (r.pid == pid)
                & (r.start == start)
                for pid, start in processes
            )
        )

    def pins(self) -> list[tuple[int, int]]:
        r = self.models.reference
        rows = (
            r.select(r.uid, r.credential)
            .where(r.kind == HolderKind.PIN.value)
            .order_by(r.uid, r.credential)
            .tuples()
        )
        return list(rows)

    def drop_pins(self, uid: int) -> set[int]:
        r = self.models.reference
        return self._drop_where((r.uid == uid) & (r.kind == HolderKind.PIN.value))

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
        for chunk in chunks(ids):
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
