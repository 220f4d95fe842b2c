"""Store operations on credentials and their grants (tables ``credential``, ``grant``).

Mixed into :class:`drc.store.sql.PeeweeTransaction`, like every row module: they run inside
the verb's transaction. What every verb runs is a statement of :data:`HOT_SQL`; listing all
credentials and skipping ids after the counter wrapped are Peewee queries.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter

from peewee import Database, fn

from drc.core.model import (
    COUNTED_BY,
    UINT32_MAX,
    Credential,
    Flags,
    LimitScope,
    Resources,
    State,
    Target,
    TargetKind,
    Usage,
)
from drc.store.models import Models
from drc.store.statements import CREDENTIAL_COLUMNS, Statements, chunks, padded

#: The credential's columns in the order this module names them; their order in the
#: statements comes from the model (:data:`CREDENTIAL_COLUMNS`), and the two getters map one
#: onto the other, so no position is written by hand.
_NAMED = (
    "id",
    "uid",
    "gid",
    "wlm",
    "flags",
    "state",
    "provider",
    "cookie1",
    "cookie2",
    "ptag",
    "provider_data",
    "created",
    "epoch",
)
assert sorted(_NAMED) == sorted(CREDENTIAL_COLUMNS), "a credential column is not named here"
_FROM_ROW = itemgetter(*(CREDENTIAL_COLUMNS.index(name) for name in _NAMED))
_TO_ROW = itemgetter(*(_NAMED.index(name) for name in CREDENTIAL_COLUMNS))


def credential_values(c: Credential) -> tuple:
    """The credential's row in :data:`CREDENTIAL_COLUMNS` order."""
    r = c.resources
    return _TO_ROW(
        (
            c.id,
            c.uid,
            c.gid,
            c.wlm,
            int(c.flags),
            c.state.value,
            r.provider,
            r.cookie1,
            r.cookie2,
            r.ptag,
            r.data,
            c.created,
            c.epoch,
        )
    )


def credential_from_row(row: Sequence, acl: dict, counts: dict) -> Credential:
    """A :class:`Credential` from a row in :data:`CREDENTIAL_COLUMNS` order, its grants and
    reference counts by credential id."""
    (cid, uid, gid, wlm, flags, state, provider, c1, c2, ptag, data, created, epoch) = _FROM_ROW(
        row
    )
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


class CredentialRows:
    db: Database
    models: Models
    _sql: Statements
    created: int  # the credential this transaction inserted (request records)
    #: PostgreSQL: tell every DRCS of each revoke and free at commit (the shared change feed).
    notify_changes: bool
    notified: bool
    postgresql: bool

    def next_credential_id(self) -> int:
        """Monotonic uint32 ids; after wrapping, ids still alive are skipped.

        One statement moves the counter and says whether the new id is taken; the skipping
        loop only runs once the counter has wrapped past 4294967295. PostgreSQL draws from a
        sequence instead, which no transaction holds until commit (migration 0008).
        """
        if self.postgresql:
            for _ in range(UINT32_MAX):
                ((candidate, taken),) = self._sql.rows("next_credential_id_sequence")
                if not taken:
                    return candidate
            raise RuntimeError("every credential id is alive")
        ((candidate, taken),) = self._sql.rows("next_credential_id")
        if not taken:
            return candidate
        c, counter = self.models.credential, self.models.counter
        for _ in range(UINT32_MAX - 1):
            candidate = candidate % UINT32_MAX + 1
            if not c.select().where(c.id == candidate).exists():
                break
        counter.update(value=candidate).where(counter.name == "credential").execute()
        return candidate

    def insert_credential(self, c: Credential) -> None:
        self.created = c.id
        self._sql.execute("insert_credential", credential_values(c))

    def get_credential(self, credential: int, *, count_refs: bool = True) -> Credential | None:
        """One statement, no row lock of its own: a verb locks its credential first
        (:meth:`PeeweeTransaction.lock_credentials`). ``count_refs=False`` skips counting
        references (``refs`` is 0), which costs time in proportion to them."""
        found = self._load([credential], count_refs=count_refs)
        return found[0] if found else None

    def list_credentials(self, ids: Iterable[int] | None = None) -> list[Credential]:
        """Credentials with their grants and reference counts.

        Given ids: one statement per :data:`CHUNK` of them. All of them: three plain queries
        and no IN lists (about 0.1 s for 10k credentials).
        """
        if ids is not None:
            return [c for chunk in chunks(ids) for c in self._load(chunk)]
        c, g, r = self.models.credential, self.models.grant, self.models.reference
        query = c.select(*(c._meta.columns[name] for name in CREDENTIAL_COLUMNS)).order_by(c.id)
        grants = g.select(g.credential, g.kind, g.target)
        refs = r.select(r.credential, fn.COUNT(r.id)).group_by(r.credential)
        rows = list(query.tuples())
        if not rows:
            return []
        acl: dict[int, list[Target]] = {}
        for cred_id, kind, target in grants.tuples():
            acl.setdefault(cred_id, []).append(Target(TargetKind(kind), target))
        counts = dict(refs.tuples())
        return [credential_from_row(row, acl, counts) for row in rows]

    def _load(self, ids: list[int], *, count_refs: bool = True) -> list[Credential]:
        """Up to :data:`CHUNK` credentials, ordered by id, in one statement."""
        if not ids:
            return []
        ids = padded(ids)
        rows: dict[int, tuple] = {}
        counts: dict[int, int] = {}
        acl: dict[int, list[Target]] = {}
        for *row, refs, kind, target in self._sql.rows(
            "load_credentials" if count_refs else "load_credentials_uncounted",
            [*ids, *ids] if count_refs else ids,
            in_size=len(ids),
        ):
            cid = row[0]
            rows[cid] = tuple(row)
            counts[cid] = refs
            if kind is not None:
                acl.setdefault(cid, []).append(Target(TargetKind(kind), target))
        return [credential_from_row(row, acl, counts) for row in rows.values()]

    def set_state(self, credential: int, state: State) -> None:
        self._sql.execute("set_state", (state.value, credential))

    def bump_epoch(self, credential: int) -> None:
        self._sql.execute("bump_epoch", (credential,))
        if self.notify_changes:  # delivered to every DRCS at commit, never if it rolls back
            self._sql.execute("notify_revoked", (credential,))
            self.notified = True

    def delete_credentials(self, ids: Iterable[int]) -> None:
        """One statement per chunk: their grants (and references: a freed credential has
        none left) go by the foreign keys' ON DELETE CASCADE, on both backends."""
        for chunk in chunks(ids):
            some = padded(chunk)
            self._sql.execute("delete_credentials", some, in_size=len(some))
            if self.notify_changes:
                self._sql.execute("notify_freed", (chunk,))
                self.notified = True

    def usage(self, uid: int, gid: int, job: int, scopes: Collection[LimitScope]) -> Usage:
        want = {COUNTED_BY[scope] for scope in scopes}
        params = ("total" in want, "uid" in want, uid, uid, uid, "gid" in want, gid)
        params += ("job" in want, job)
        ((total, by_uid, by_gid, by_job),) = self._sql.rows("usage", params)
        return Usage(total or 0, int(by_uid or 0), int(by_gid or 0), int(by_job or 0))

    # -- grants (the access control list) -------------------------------------------------

    def add_grant(self, credential: int, target: Target) -> bool:
        """One statement. An existing grant or a missing credential inserts nothing instead of
        raising a constraint error, so no savepoint is needed to keep the transaction usable."""
        cursor = self._sql.execute(
            "add_grant", (credential, target.kind.value, target.id, credential)
        )
        return cursor.rowcount > 0

    def remove_grant(self, credential: int, target: Target) -> bool:
        cursor = self._sql.execute("remove_grant", (credential, target.kind.value, target.id))
        return cursor.rowcount > 0
